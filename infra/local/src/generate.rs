//! The template's phase region, generated from the stack's pipelines: every phase's queue,
//! DLQ, function (the shared bootstrap with its `SHEPHERD_HANDLER`, timeout, event source
//! and `MaximumConcurrency`), least-privilege policy (the phase's integrations' secrets, its
//! next phases' queues) and alarms; the managed policies the platform's functions take for
//! every phase queue; and the definitions, published in SSM for the operators' tools.
//! `shepherd-local template` writes it between the markers of `template.yaml`; `--check`
//! fails when the file differs. Hand-written YAML is for the platform's own resources.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;
use shepherd::domain::CallKind;
use shepherd::pipeline::PhaseDefinition;
use shepherd::pipeline::Pipelines;

use crate::template::{TemplateError, load};

/// The line that opens the generated region.
pub const BEGIN: &str = "  # ---- BEGIN generated: the pipelines' phases (cargo run -p shepherd-local -- template) ----";
/// The line that closes it.
pub const END: &str = "  # ---- END generated ----";

/// SSM's limits on a String parameter's value, by tier.
pub const SSM_STANDARD_LIMIT: usize = 4096;
pub const SSM_ADVANCED_LIMIT: usize = 8192;
/// IAM's limit on a managed policy document (characters, whitespace not counted).
pub const MANAGED_POLICY_LIMIT: usize = 6144;

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(
        "template.yaml has no generated region: put the lines\n{BEGIN}\n{END}\nat the end of \
         Resources"
    )]
    NoRegion,
    #[error("{0}")]
    Invalid(String),
}

/// One phase as the stack deploys it: one function and one queue, whichever pipeline
/// versions name it.
#[derive(Debug, Clone)]
struct DeployedPhase {
    name: String,
    /// `pipeline v<n>` of every definition that names it.
    used_by: Vec<String>,
    /// The longest timeout and the highest concurrency any definition asks of it.
    timeout: u32,
    concurrency: u32,
    integrations: Vec<CallKind>,
    /// The phases any definition runs right after it (the hand-offs it sends).
    next: Vec<String>,
    /// The largest retry budget, and the definition that asks it.
    max_tries: (u32, String),
}

/// What the hand-written part of the template says that the region depends on.
struct Platform {
    phase_timeout: u64,
    queue_visibility: u64,
    max_receive_count: u64,
    /// Integration kind -> the template parameters naming the secrets of the integrations
    /// that serve it (from the hand-written integration registry, `IntegrationsParameter`).
    secrets: std::collections::HashMap<CallKind, Vec<String>>,
}

impl Platform {
    fn read(template: &Value) -> Result<Self, GenerateError> {
        let default = |p: &str| {
            let v = &template["Parameters"][p]["Default"];
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| GenerateError::Invalid(format!("parameter {p} has no default")))
        };
        let registry =
            template["Resources"]["IntegrationsParameter"]["Properties"]["Value"]["Fn::Sub"]
                .as_str()
                .ok_or_else(|| {
                    GenerateError::Invalid("IntegrationsParameter's Value is not a !Sub".into())
                })?;
        // Values that are parameters (not secrets' names) are checked with their defaults.
        let registry = ["ModerationThresholds", "ImageTimeoutSeconds"].iter().fold(
            registry.to_string(),
            |r, p| {
                let v = &template["Parameters"][p]["Default"];
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                r.replace(&format!("${{{p}}}"), &v)
            },
        );
        let registry: shepherd::config::Registry =
            shepherd::config::Registry::parse("IntegrationsParameter", &registry)
                .map_err(GenerateError::Invalid)?;
        let mut secrets: std::collections::HashMap<CallKind, Vec<String>> = Default::default();
        for id in &registry.chain {
            let d = &registry.integrations[id];
            let param = d
                .secret_param
                .strip_prefix("${")
                .and_then(|p| p.strip_suffix('}'))
                .ok_or_else(|| {
                    GenerateError::Invalid(format!(
                        "integration {id}: secret_param {:?} is not a template parameter (${{Name}})",
                        d.secret_param
                    ))
                })?;
            for kind in &d.kinds {
                let v = secrets.entry(*kind).or_default();
                if !v.iter().any(|p| p == param) {
                    v.push(param.to_string());
                }
            }
        }
        Ok(Self {
            phase_timeout: default("PhaseTimeoutSeconds")?,
            queue_visibility: default("QueueVisibilitySeconds")?,
            max_receive_count: default("MaxReceiveCount")?,
            secrets,
        })
    }
}

/// `pull_request` -> `PullRequest`: a logical id's part.
pub fn camel(name: &str) -> String {
    name.split(['_', '-'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// checkov findings a phase's queues keep, each with its reason (a new finding fails CI).
const CHECKOV_QUEUE: &str = "    Metadata:
      checkov:
        skip:
          - id: CKV_AWS_27
            comment: Encrypted at rest by SQS-managed keys (SqsManagedSseEnabled); checkov counts only KMS keys.
";

/// checkov findings a phase's function keeps, each with its reason.
const CHECKOV_PHASE_FUNCTION: &str = "      checkov:
        skip:
          - id: CKV_AWS_115
            comment: Bounded by its SQS event source's MaximumConcurrency, which takes nothing from the account's pool.
          - id: CKV_AWS_116
            comment: Invoked by SQS, never asynchronously; a failed message goes to the queue's redrive DLQ.
          - id: CKV_AWS_117
            comment: Reaches only AWS APIs and public providers; a VPC would add NAT cost and protect nothing it holds.
          - id: CKV_AWS_173
            comment: Its environment holds names, no secrets (those are SSM SecureStrings read at run time).
";

fn deployed_phases(pipelines: &Pipelines) -> Vec<DeployedPhase> {
    let mut out: Vec<DeployedPhase> = Vec::new();
    for pipeline in pipelines.all() {
        let at = format!("{} v{}", pipeline.name(), pipeline.version());
        let phases = &pipeline.definition.phases;
        for (i, p) in phases.iter().enumerate() {
            let next = phases.get(i + 1).map(|n: &PhaseDefinition| n.name.clone());
            let d = match out.iter_mut().find(|d| d.name == p.name) {
                Some(d) => d,
                None => {
                    out.push(DeployedPhase {
                        name: p.name.clone(),
                        used_by: vec![],
                        timeout: 0,
                        concurrency: 0,
                        integrations: vec![],
                        next: vec![],
                        max_tries: (0, String::new()),
                    });
                    out.last_mut().expect("pushed")
                }
            };
            d.used_by.push(at.clone());
            if p.max_tries > d.max_tries.0 {
                d.max_tries = (p.max_tries, at.clone());
            }
            d.timeout = d.timeout.max(p.timeout_seconds);
            d.concurrency = d.concurrency.max(p.concurrency);
            for k in &p.integrations {
                if !d.integrations.contains(k) {
                    d.integrations.push(*k);
                }
            }
            if let Some(n) = next
                && !d.next.contains(&n)
            {
                d.next.push(n);
            }
        }
    }
    out
}

fn arn_of_parameter(param: &str) -> String {
    format!(
        "!Sub \"arn:${{AWS::Partition}}:ssm:${{AWS::Region}}:${{AWS::AccountId}}:parameter${{{param}}}\""
    )
}

/// The generated region for a stack running `pipelines`, against the hand-written part of
/// `template` (its parameters' defaults and its integration registry). Deterministic.
pub fn render(pipelines: &Pipelines, template: &Value) -> Result<String, GenerateError> {
    let platform = Platform::read(template)?;
    let phases = deployed_phases(pipelines);
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    for p in &phases {
        if let Some(other) = ids.insert(camel(&p.name), p.name.clone()) {
            return Err(GenerateError::Invalid(format!(
                "phases {other} and {} would share the logical ids {}Queue, {}Function, ...: \
                 rename one",
                p.name,
                camel(&p.name),
                camel(&p.name)
            )));
        }
    }
    let mut y = String::new();
    let w = &mut y;
    for p in &phases {
        let (tries, at) = &p.max_tries;
        if u64::from(*tries) >= platform.max_receive_count {
            return Err(GenerateError::Invalid(format!(
                "{at} phase {}: max_tries {tries} must stay below the queues' maxReceiveCount \
                 ({}, the MaxReceiveCount default): SQS would dead-letter the message before \
                 the engine's budget is spent",
                p.name, platform.max_receive_count
            )));
        }
        phase(w, p, &platform)?;
    }
    policies(w, &phases)?;
    function_alarms(w, template, &phases);
    dashboard(w, &phases);
    definitions(w, pipelines)?;
    Ok(y)
}

/// The stack's functions: (logical id, short name, driven by a DynamoDB stream). The
/// platform's are read from the hand-written part (a function whose handler is one the
/// stack keeps, or none: the API); the phases' are the ones this region generates.
fn functions(template: &Value, phases: &[DeployedPhase]) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for (id, r) in template["Resources"].as_object().into_iter().flatten() {
        if r["Type"] != "AWS::Serverless::Function" {
            continue;
        }
        let props = &r["Properties"];
        let short = match props["Environment"]["Variables"]["SHEPHERD_HANDLER"].as_str() {
            None => "api".to_string(),
            Some(h) if shepherd::stack::RESERVED_NAMES.contains(&h) => h.to_string(),
            // A phase of the region this one replaces.
            Some(_) => continue,
        };
        let stream = props["Events"]
            .as_object()
            .is_some_and(|e| e.values().any(|e| e["Type"] == "DynamoDB"));
        out.push((id.clone(), short, stream));
    }
    for p in phases {
        out.push((format!("{}Function", camel(&p.name)), p.name.clone(), false));
    }
    out
}

/// Shepherd watches itself: every function's errors (a failed or timed-out invocation: an
/// init failure, a panic outside a phase, a handler error) and throttles, and how far
/// behind its stream a stream consumer reads, alarmed into the alarm topic (so into
/// `GET /alarms`, named by function).
fn function_alarms(w: &mut String, template: &Value, phases: &[DeployedPhase]) {
    w.push_str("  # ---- Every function's errors and throttles; stream consumers' lag ----\n");
    for (id, short, stream) in functions(template, phases) {
        let logs = format!("`sam logs -n {id} --stack-name <stack>`");
        let mut alarms = vec![
            (
                "Errors",
                "errors",
                "Sum",
                0,
                format!(
                    "The {short} function failed an invocation (an error, a crash or a timeout). Read {logs}; SQS and stream sources retry it, and what still fails reaches its DLQ or failure queue."
                ),
            ),
            (
                "Throttles",
                "throttled",
                "Sum",
                0,
                format!(
                    "The {short} function was throttled (the account's or its reserved concurrency). Its events wait and are retried; raise the limit if it persists."
                ),
            ),
        ];
        if stream {
            alarms.push((
                "IteratorAge",
                "behind",
                "Maximum",
                300_000,
                format!(
                    "The {short} function reads its DynamoDB stream more than 5 minutes behind (the stream keeps records 24 hours). Read {logs}."
                ),
            ));
        }
        for (metric, suffix, statistic, threshold, about) in alarms {
            let _ = write!(
                w,
                r#"  {id}{metric}Alarm:
    Type: AWS::CloudWatch::Alarm
    Properties:
      AlarmName: !Sub "${{AWS::StackName}}-{short}-{suffix}"
      AlarmDescription: {about}
      Namespace: AWS/Lambda
      MetricName: {metric}
      Dimensions: [{{ Name: FunctionName, Value: !Ref {id} }}]
      Statistic: {statistic}
      Period: 60
      EvaluationPeriods: 1
      Threshold: {threshold}
      ComparisonOperator: GreaterThanThreshold
      TreatMissingData: notBreaching
      AlarmActions: [!Ref AlarmTopic]
      OKActions: [!Ref AlarmTopic]

"#
            );
        }
    }
}

/// The stack's CloudWatch dashboard: the EMF metrics the functions write (namespace
/// `Shepherd`, dimension `service` = the stack) beside the queues' depths. Integrations,
/// functions and schedules are found by SEARCH, so one added later shows up by itself.
fn dashboard(w: &mut String, phases: &[DeployedPhase]) {
    use serde_json::json;
    let ns = shepherd::metrics::NAMESPACE;
    let service = "${AWS::StackName}";
    let per_phase = |metric: &str, stat: &str| -> Vec<serde_json::Value> {
        phases
            .iter()
            .map(|p| {
                json!([ns, metric, "service", service, "phase", p.name,
                       {"stat": stat, "label": format!("{} {metric}", p.name)}])
            })
            .collect()
    };
    let search = |dims: &str, metric: &str, stat: &str| {
        json!([{"expression": format!(
            "SEARCH('{{{ns},{dims}}} MetricName=\"{metric}\" service=\"{service}\"', '{stat}', 300)"
        ), "id": metric.to_lowercase(), "label": metric}])
    };
    let mut outcomes = Vec::new();
    for m in [
        "PhaseSucceeded",
        "PhaseRetried",
        "PhaseHeld",
        "PhaseFailed",
        "PhaseDeadLettered",
    ] {
        outcomes.extend(per_phase(m, "Sum"));
    }
    let depths: Vec<serde_json::Value> = phases
        .iter()
        .flat_map(|p| {
            [
                format!("${{AWS::StackName}}-{}", p.name),
                format!("${{AWS::StackName}}-{}-dlq", p.name),
            ]
        })
        .map(|q| {
            json!([
                "AWS/SQS",
                "ApproximateNumberOfMessagesVisible",
                "QueueName",
                q
            ])
        })
        .collect();
    let service_metrics = |names: &[&str]| -> Vec<serde_json::Value> {
        names
            .iter()
            .map(|m| json!([ns, m, "service", service, {"stat": "Sum"}]))
            .collect()
    };
    let widget = |i: usize, title: &str, metrics: serde_json::Value| {
        json!({"type": "metric", "x": (i % 2) * 12, "y": (i / 2) * 6, "width": 12, "height": 6,
               "properties": {"title": title, "region": "${AWS::Region}", "view": "timeSeries",
                              "period": 300, "metrics": metrics}})
    };
    let widgets = [
        ("Phase outcomes (per phase)", json!(outcomes)),
        (
            "Phase duration p90, ms",
            json!(per_phase("PhaseDuration", "p90")),
        ),
        ("Queue and DLQ depth", json!(depths)),
        (
            "Provider latency p90, ms (per integration)",
            search("service,integration", "ProviderLatency", "p90"),
        ),
        (
            "Provider errors (per integration)",
            search("service,integration", "ProviderErrors", "Sum"),
        ),
        (
            "Webhook deliveries",
            json!(service_metrics(&[
                "WebhookDelivered",
                "WebhookRetried",
                "WebhookFailed"
            ])),
        ),
        (
            "Schedules",
            json!(service_metrics(&[
                "ScheduleFired",
                "ScheduleMissed",
                "ScheduleErrors"
            ])),
        ),
        (
            "Cold starts (per function)",
            search("service,function_name", "ColdStart", "Sum"),
        ),
    ];
    let _ = write!(
        w,
        "  # ---- The stack's dashboard: EMF metrics (namespace {ns}) and queue depths ----\n  \
         Dashboard:\n    Type: AWS::CloudWatch::Dashboard\n    Properties:\n      \
         DashboardName: !Sub \"${{AWS::StackName}}\"\n      DashboardBody: !Sub |\n        \
         {{\"widgets\": [\n"
    );
    let n = widgets.len();
    for (i, (title, m)) in widgets.into_iter().enumerate() {
        let sep = if i + 1 < n { "," } else { "" };
        let _ = writeln!(w, "          {}{sep}", widget(i, title, m));
    }
    let _ = writeln!(w, "        ]}}");
    w.push('\n');
}

fn phase(w: &mut String, p: &DeployedPhase, platform: &Platform) -> Result<(), GenerateError> {
    let (c, n) = (camel(&p.name), &p.name);
    let used_by = p.used_by.join(", ");
    let own_timeout = u64::from(p.timeout) != platform.phase_timeout;
    let visibility = if own_timeout {
        // Lambda needs the queue's visibility at least the function's timeout; six times
        // it lets a batch's retries back off (the same rule as QueueVisibilitySeconds).
        (6 * u64::from(p.timeout))
            .max(platform.queue_visibility)
            .to_string()
    } else {
        "!Ref QueueVisibilitySeconds".to_string()
    };
    let _ = write!(
        w,
        r#"
  # ---- Phase: {n} ({used_by}) ----
  {c}DeadLetterQueue:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: !Sub "${{AWS::StackName}}-{n}-dlq"
      MessageRetentionPeriod: 1209600
      SqsManagedSseEnabled: true
{queue_skip}
  {c}Queue:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: !Sub "${{AWS::StackName}}-{n}"
      VisibilityTimeout: {visibility}
      MessageRetentionPeriod: 1209600
      SqsManagedSseEnabled: true
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt {c}DeadLetterQueue.Arn
        maxReceiveCount: !Ref MaxReceiveCount
{queue_skip}
  {c}Function:
    Type: AWS::Serverless::Function
    Metadata:
      BuildMethod: rust-cargolambda
      BuildProperties:
        Binary: bootstrap
{function_skip}    Properties:
      Description: Shepherd phase "{n}" ({used_by})
"#,
        queue_skip = CHECKOV_QUEUE,
        function_skip = CHECKOV_PHASE_FUNCTION,
    );
    if own_timeout {
        let _ = writeln!(w, "      Timeout: {}", p.timeout);
    }
    let _ = write!(
        w,
        r#"      Environment:
        Variables:
          SHEPHERD_HANDLER: {n}
"#
    );
    if own_timeout {
        let _ = writeln!(
            w,
            "          SHEPHERD_FUNCTION_TIMEOUT_SECS: \"{}\"",
            p.timeout
        );
    }
    if p.integrations.contains(&CallKind::Http) {
        // Where its external jobs report (the HTTP API's token-authenticated route).
        let _ = writeln!(
            w,
            "          SHEPHERD_CALLBACK_URL: !Sub \"https://${{HttpApi}}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}/callbacks/\""
        );
    }
    let _ = write!(
        w,
        r#"      Policies:
        - Version: "2012-10-17"
          Statement:
            - Sid: State
              Effect: Allow
              Action: [dynamodb:GetItem, dynamodb:PutItem, dynamodb:UpdateItem]
              Resource: !GetAtt StateTable.Arn
            - Sid: CallLedger
              Effect: Allow
              Action: [dynamodb:GetItem, dynamodb:PutItem]
              Resource: !GetAtt IdempotencyTable.Arn
            - Sid: HandOffRetryAndDeadLetter
              Effect: Allow
              Action: [sqs:SendMessage]
              Resource:
                - !GetAtt {c}Queue.Arn
"#
    );
    for next in &p.next {
        let _ = writeln!(w, "                - !GetAtt {}Queue.Arn", camel(next));
    }
    let _ = write!(
        w,
        r#"                - !GetAtt {c}DeadLetterQueue.Arn
            - Sid: Backoff
              Effect: Allow
              Action: [sqs:ChangeMessageVisibility]
              Resource: !GetAtt {c}Queue.Arn
            - Sid: Artifacts
              Effect: Allow
              Action: [s3:PutObject, s3:GetObject]
              Resource: !Sub "${{ArtifactBucket.Arn}}/productions/*"
            - Sid: ConfigAndSecrets
              Effect: Allow
              Action: [ssm:GetParameter]
              Resource:
                - !Sub "arn:${{AWS::Partition}}:ssm:${{AWS::Region}}:${{AWS::AccountId}}:parameter/shepherd/${{AWS::StackName}}/integrations"
"#
    );
    let mut secrets: Vec<&str> = Vec::new();
    for kind in &p.integrations {
        for s in platform.secrets.get(kind).into_iter().flatten() {
            if !secrets.contains(&s.as_str()) {
                secrets.push(s);
            }
        }
    }
    for s in secrets {
        let _ = writeln!(w, "                - {}", arn_of_parameter(s));
    }
    if p.integrations.contains(&CallKind::Scm) {
        // An account's own source-control token (`shepherd account <a> --scm-token-param`).
        w.push_str(
            "                - !Sub \"arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/shepherd/${AWS::StackName}/accounts/*\"\n",
        );
    }
    let _ = write!(
        w,
        r#"      Events:
        Queue:
          Type: SQS
          Properties:
            Queue: !GetAtt {c}Queue.Arn
            BatchSize: 10
            FunctionResponseTypes: [ReportBatchItemFailures]
            ScalingConfig:
              MaximumConcurrency: {concurrency}

  {c}DeadLetterAlarm:
    Type: AWS::CloudWatch::Alarm
    Properties:
      AlarmName: !Sub "${{AWS::StackName}}-{n}-dlq-not-empty"
      AlarmDescription: Messages arrived in the {n} DLQ. Inspect with `shepherd dlq list --phase {n}`, fix the cause, then `shepherd dlq redrive --phase {n}`.
      Namespace: AWS/SQS
      MetricName: ApproximateNumberOfMessagesVisible
      Dimensions: [{{ Name: QueueName, Value: !GetAtt {c}DeadLetterQueue.QueueName }}]
      Statistic: Maximum
      Period: 60
      EvaluationPeriods: 1
      Threshold: 0
      ComparisonOperator: GreaterThanThreshold
      TreatMissingData: notBreaching
      AlarmActions: [!Ref AlarmTopic]
      OKActions: [!Ref AlarmTopic]

  {c}OldestMessageAlarm:
    Type: AWS::CloudWatch::Alarm
    Properties:
      AlarmName: !Sub "${{AWS::StackName}}-{n}-oldest-message"
      AlarmDescription: The {n} queue holds a message older than StuckAfterSeconds - a phase stuck or starved. Check `shepherd list` for productions running {n}.
      Namespace: AWS/SQS
      MetricName: ApproximateAgeOfOldestMessage
      Dimensions: [{{ Name: QueueName, Value: !GetAtt {c}Queue.QueueName }}]
      Statistic: Maximum
      Period: 60
      EvaluationPeriods: 1
      Threshold: !Ref StuckAfterSeconds
      ComparisonOperator: GreaterThanThreshold
      TreatMissingData: notBreaching
      AlarmActions: [!Ref AlarmTopic]
      OKActions: [!Ref AlarmTopic]
"#,
        concurrency = p.concurrency
    );
    Ok(())
}

/// The platform's functions (hand-written) reach every phase's queue through these.
fn policies(w: &mut String, phases: &[DeployedPhase]) -> Result<(), GenerateError> {
    w.push_str(
        "\n  # ---- Every phase's queues, for the platform's functions (they attach these) ----\n",
    );
    for (id, description, actions, suffix) in [
        (
            "PhaseQueuesSendPolicy",
            "Send to every phase queue (dispatch, redispatch, resubmit)",
            "[sqs:SendMessage]",
            "Queue",
        ),
        (
            "PhaseDeadLettersPeekPolicy",
            "Peek at every phase DLQ (which productions a DLQ alarm is about)",
            "[sqs:ReceiveMessage]",
            "DeadLetterQueue",
        ),
        (
            "PhaseDeadLettersManagePolicy",
            "Inspect, resubmit, redrive and discard every phase DLQ's messages",
            "[sqs:ReceiveMessage, sqs:DeleteMessage, sqs:ChangeMessageVisibility, sqs:GetQueueAttributes]",
            "DeadLetterQueue",
        ),
    ] {
        let _ = write!(
            w,
            r#"  {id}:
    Type: AWS::IAM::ManagedPolicy
    Properties:
      Description: {description}
      PolicyDocument:
        Version: "2012-10-17"
        Statement:
          - Effect: Allow
            Action: {actions}
            Resource:
"#
        );
        for p in phases {
            let _ = writeln!(w, "              - !GetAtt {}{suffix}.Arn", camel(&p.name));
        }
        w.push('\n');
        // Each ARN with a 32-character stack name in a long region, quoted, comma'd.
        let size: usize = 200
            + phases
                .iter()
                .map(|p| "arn:aws:sqs:ap-southeast-2:123456789012:".len() + 33 + p.name.len() + 8)
                .sum::<usize>();
        if size > MANAGED_POLICY_LIMIT {
            return Err(GenerateError::Invalid(format!(
                "{id} would be about {size} characters; IAM allows {MANAGED_POLICY_LIMIT} in a \
                 managed policy: a stack of {} phases is too many for one policy",
                phases.len()
            )));
        }
    }
    Ok(())
}

/// Each definition version in its own parameter, each watcher kind's declaration in its
/// own, and the index the operators' tools read.
fn definitions(w: &mut String, pipelines: &Pipelines) -> Result<(), GenerateError> {
    w.push_str(
        "  # ---- The pipelines' definitions, for the operators' tools (shepherd CLI) ----\n",
    );
    let mut names = Vec::new();
    for p in pipelines.all() {
        let (name, version) = (p.name(), p.version());
        let text = serde_json::to_string(&p.definition).expect("a definition serialises");
        names.push(parameter(
            w,
            &format!("Definition{}V{version}Parameter", camel(name)),
            &format!("/shepherd/${{AWS::StackName}}/definitions/{name}/v{version}"),
            &text,
            &format!("{name} v{version}'s definition"),
        )?);
    }
    let mut kinds = Vec::new();
    for k in pipelines.watch_kinds() {
        let name = &k.name;
        let text = serde_json::to_string(k).expect("a declaration serialises");
        kinds.push(parameter(
            w,
            &format!("WatchKind{}Parameter", camel(name)),
            &format!("/shepherd/${{AWS::StackName}}/watch-kinds/{name}"),
            &text,
            &format!("watcher kind {name}'s declaration"),
        )?);
    }
    let mut index = serde_json::json!({
        "default": pipelines.default_name(),
        "definitions": names,
    });
    if !kinds.is_empty() {
        index["watch_kinds"] = kinds.into();
    }
    let _ = write!(
        w,
        r#"  PipelinesParameter:
    Type: AWS::SSM::Parameter
    Properties:
      Name: !Sub "/shepherd/${{AWS::StackName}}/pipelines"
      Type: String
      Value: !Sub {}

"#,
        serde_json::to_string(&index.to_string()).expect("a string serialises")
    );
    Ok(())
}

/// An SSM parameter `id` named `path` holding `text` (the advanced tier when the standard
/// one is too small); its name.
fn parameter(
    w: &mut String,
    id: &str,
    path: &str,
    text: &str,
    what: &str,
) -> Result<String, GenerateError> {
    let tier = match text.len() {
        n if n <= SSM_STANDARD_LIMIT => None,
        n if n <= SSM_ADVANCED_LIMIT => Some("Advanced"),
        n => {
            return Err(GenerateError::Invalid(format!(
                "{what} is {n} characters as JSON; an SSM parameter holds at most \
                 {SSM_ADVANCED_LIMIT}: shorten its schemas' descriptions"
            )));
        }
    };
    let _ = write!(
        w,
        r#"  {id}:
    Type: AWS::SSM::Parameter
    Properties:
      Name: !Sub "{path}"
      Type: String
"#
    );
    if let Some(t) = tier {
        let _ = writeln!(w, "      Tier: {t}");
    }
    let _ = writeln!(
        w,
        "      Value: {}\n",
        serde_json::to_string(text).expect("a string serialises")
    );
    Ok(path.to_string())
}

/// `template` with its generated region replaced by the one `pipelines` render.
pub fn apply(template: &str, pipelines: &Pipelines) -> Result<String, GenerateError> {
    let start = template.find(BEGIN).ok_or(GenerateError::NoRegion)?;
    let end = template.find(END).ok_or(GenerateError::NoRegion)?;
    if end < start || template[start + BEGIN.len()..].contains(BEGIN) {
        return Err(GenerateError::NoRegion);
    }
    let loaded = load(template)?;
    let region = render(pipelines, &loaded)?;
    let head = &template[..start + BEGIN.len()];
    let note = "\n  # Do not edit: `cargo run -p shepherd-local -- template` writes this region from the\n  # stack's pipelines (pipelines/stack), and CI fails when it differs (`-- template --check`).\n";
    Ok(format!("{head}{note}{region}{}", &template[end..]))
}

/// Where `template`'s generated region differs from what `pipelines` render: `None` when
/// it is current, else the first differing line of each.
pub fn check(
    template: &str,
    pipelines: &Pipelines,
) -> Result<Option<(String, String)>, GenerateError> {
    let fresh = apply(template, pipelines)?;
    if fresh == template {
        return Ok(None);
    }
    let first = template
        .lines()
        .zip(fresh.lines())
        .find(|(a, b)| a != b)
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .unwrap_or_else(|| {
            (
                format!("{} lines", template.lines().count()),
                format!("{} lines", fresh.lines().count()),
            )
        });
    Ok(Some(first))
}

/// The sample SQS event of `phase` (`events/sqs-<phase>.json`), what `cargo lambda invoke
/// bootstrap --data-file` sends it: a message for a production that does not exist, so a
/// fresh stack quarantines it (a real production's id in its body runs the phase).
pub fn sample_event(phase: &str) -> String {
    use md5::Digest as _;
    let body = format!(
        r#"{{"production_id":"0193a1f0-7c2e-7d44-9a0b-5e1f2d3c4b5a","phase":"{phase}","attempt":1}}"#
    );
    let md5 = hex::encode(md5::Md5::digest(body.as_bytes()));
    let body = serde_json::to_string(&body).expect("a string serialises");
    format!(
        r#"{{
  "Records": [
    {{
      "messageId": "5f7c0d2e-1b3a-4c6d-8e9f-0a1b2c3d4e00",
      "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...",
      "body": {body},
      "attributes": {{
        "ApproximateReceiveCount": "1",
        "SentTimestamp": "1763859000000",
        "SenderId": "AIDAIENQZJOLO23YVJ4VO",
        "ApproximateFirstReceiveTimestamp": "1763859000050"
      }},
      "messageAttributes": {{}},
      "md5OfBody": "{md5}",
      "eventSource": "aws:sqs",
      "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:shepherd-local-{phase}",
      "awsRegion": "us-east-1"
    }}
  ]
}}
"#
    )
}

/// Every generated file under `root` and what it should hold: `template.yaml` with its
/// region rendered, and each phase's sample event.
pub fn files(
    root: &std::path::Path,
    pipelines: &Pipelines,
) -> Result<Vec<(std::path::PathBuf, String)>, GenerateError> {
    let path = root.join("template.yaml");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| GenerateError::Invalid(format!("cannot read {}: {e}", path.display())))?;
    let mut out = vec![(path, apply(&text, pipelines)?)];
    for phase in pipelines.phase_names() {
        out.push((
            root.join("events").join(format!("sqs-{phase}.json")),
            sample_event(phase),
        ));
    }
    Ok(out)
}

/// The generated files that differ from what `stack` renders (missing ones included).
pub fn stale(files: &[(std::path::PathBuf, String)]) -> Vec<std::path::PathBuf> {
    files
        .iter()
        .filter(|(p, want)| std::fs::read_to_string(p).ok().as_deref() != Some(want))
        .map(|(p, _)| p.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logical_ids_are_camel_case() {
        assert_eq!(camel("pull_request"), "PullRequest");
        assert_eq!(camel("brief"), "Brief");
        assert_eq!(camel("a-b_c"), "ABC");
    }
}
