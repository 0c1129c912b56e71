//! Creates the template's queues, tables and parameters in the emulator, so local and
//! deployed resources come from one description and cannot drift. Idempotent: an existing
//! resource is kept. Functions are not created; [`crate::runtime`] plays Lambda's part.

use std::collections::HashMap;
use std::path::Path;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use aws_sdk_ssm::types::ParameterType;
use serde_json::Value;

use crate::template::{Context, TemplateError, load, scalar};

pub const ACCOUNT_ID: &str = "123456789012";

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("could not read {0}: {1}")]
    Io(String, std::io::Error),
    #[error("{resource}: {reason}")]
    Aws { resource: String, reason: String },
    #[error("translating the template with SAM's translator: {0}")]
    Translate(String),
}

/// A function of the template, as the local runtime runs it.
#[derive(Debug, Clone)]
pub struct LocalFunction {
    pub logical_id: String,
    /// The IAM role the function runs with (from the SAM-translated template).
    pub role_arn: String,
    /// `Metadata.BuildProperties.Binary`: `bootstrap` (every function but the API) or `api`.
    pub binary: String,
    /// `SHEPHERD_HANDLER` in its environment: which handler the bootstrap runs (a phase's
    /// name, `sweeper`, ...); empty for the API.
    pub handler: String,
    pub timeout_secs: u64,
    pub env: HashMap<String, String>,
    pub events: Vec<EventSource>,
}

#[derive(Debug, Clone)]
pub enum EventSource {
    Sqs {
        queue_url: String,
        batch_size: i32,
        report_batch_item_failures: bool,
    },
    DynamoDbStream {
        stream_arn: String,
        batch_size: i32,
        /// `MaximumRetryAttempts` (absent or -1: until the record expires).
        max_retries: Option<u32>,
        /// `DestinationConfig.OnFailure`: the queue a record that exhausted its retries is
        /// reported to (Lambda's on-failure record, its batch's shard and sequence range).
        on_failure: Option<String>,
    },
    /// An SNS topic's subscription. Locally the topic delivers to a queue of the runtime's
    /// (SNS to SQS, as the emulator does it), whose messages reach the function as SNS
    /// records: the runtime plays the SNS service's part, and Lambda's for an asynchronous
    /// invocation: `retries` more tries (the function's `EventInvokeConfig`, 2 by default),
    /// then the record to `on_failure` (its `DestinationConfig.OnFailure`), if any.
    Sns {
        topic_arn: String,
        retries: u32,
        on_failure: Option<String>,
    },
    /// EventBridge Scheduler (`ScheduleV2`): `rate(...)` expressions run locally.
    Schedule { every: std::time::Duration },
    /// An API Gateway HTTP API route. Locally one server per function answers every route;
    /// the authorizer's part is played by a token file.
    /// `throttle`: the API's `DefaultRouteSettings` (requests per second, burst), which
    /// the local server enforces as API Gateway does.
    Http {
        path: String,
        method: String,
        throttle: Option<(f64, u32)>,
    },
}

/// `rate(1 minute)`, `rate(5 minutes)`, `rate(2 hours)`: the interval; other expressions
/// (cron, at) are not run locally.
pub fn rate(expression: &str) -> Option<std::time::Duration> {
    let inner = expression.strip_prefix("rate(")?.strip_suffix(')')?;
    let (n, unit) = inner.split_once(' ')?;
    let n: u64 = n.trim().parse().ok()?;
    let secs = match unit.trim().trim_end_matches('s') {
        "minute" => 60,
        "hour" => 3600,
        "day" => 86_400,
        _ => return None,
    };
    Some(std::time::Duration::from_secs(n * secs))
}

/// What was provisioned: every resolved reference, and the functions to run.
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub stack: String,
    pub context: Context,
    pub functions: Vec<LocalFunction>,
}

impl Provisioned {
    /// `Ref` of a logical id (a queue's URL, a table's name, a parameter's name).
    pub fn reference(&self, logical_id: &str) -> Option<&str> {
        self.context.refs.get(logical_id).map(String::as_str)
    }
}

fn aws_err(resource: &str, e: impl std::fmt::Display) -> ProvisionError {
    ProvisionError::Aws {
        resource: resource.into(),
        reason: e.to_string(),
    }
}

/// Provisions `template` as stack `stack` with parameter `overrides`.
pub async fn provision(
    sdk: &aws_config::SdkConfig,
    template: &Path,
    stack: &str,
    overrides: &HashMap<String, String>,
) -> Result<Provisioned, ProvisionError> {
    let text = std::fs::read_to_string(template)
        .map_err(|e| ProvisionError::Io(template.display().to_string(), e))?;
    let t = load(&text)?;
    let region = sdk
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "us-east-1".into());
    let mut cx = Context {
        conditions: t["Conditions"].as_object().cloned().unwrap_or_default(),
        ..Context::default()
    };
    cx.refs.insert("AWS::StackName".into(), stack.into());
    cx.refs.insert("AWS::Region".into(), region.clone());
    cx.refs.insert("AWS::AccountId".into(), ACCOUNT_ID.into());
    cx.refs.insert("AWS::Partition".into(), "aws".into());
    cx.refs
        .insert("AWS::URLSuffix".into(), "amazonaws.com".into());
    for (name, p) in t["Parameters"].as_object().into_iter().flatten() {
        let value = overrides
            .get(name)
            .cloned()
            .unwrap_or_else(|| scalar(&p["Default"]));
        cx.refs.insert(name.clone(), value);
    }
    for name in overrides.keys() {
        if !cx.refs.contains_key(name) {
            return Err(ProvisionError::Template(TemplateError::Unsupported(
                format!("parameter override {name}: the template has no such parameter"),
            )));
        }
    }

    let sqs = aws_sdk_sqs::Client::new(sdk);
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    let ssm = aws_sdk_ssm::Client::new(sdk);
    let s3 = shepherd::wiring::AwsClients::new(sdk).s3;
    let sns = aws_sdk_sns::Client::new(sdk);
    let resources = t["Resources"].as_object().cloned().unwrap_or_default();
    let mut pending: Vec<(String, Value)> = resources
        .into_iter()
        .filter(|(_, r)| r["Type"] != "AWS::Serverless::Function")
        .collect();
    // Create what can be resolved, until nothing is left (a fixpoint over references).
    while !pending.is_empty() {
        let mut next = Vec::new();
        let before = pending.len();
        for (id, r) in pending {
            const LOCAL: [&str; 6] = [
                "AWS::SQS::Queue",
                "AWS::DynamoDB::Table",
                "AWS::SSM::Parameter",
                "AWS::S3::Bucket",
                "AWS::SNS::Topic",
                "AWS::IAM::ManagedPolicy",
            ];
            if !LOCAL.contains(&r["Type"].as_str().unwrap_or_default()) {
                // Alarms, topics, ...: not emulated; a placeholder keeps references resolvable.
                tracing::debug!(resource = %id, r#type = %r["Type"], "not provisioned locally");
                cx.refs.insert(id.clone(), format!("local:{id}"));
                continue;
            }
            let props = match cx.resolve(&r["Properties"]) {
                Ok(p) => p,
                Err(TemplateError::Unresolved(_)) => {
                    next.push((id, r));
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            match r["Type"].as_str().unwrap_or_default() {
                "AWS::SQS::Queue" => create_queue(&sqs, &mut cx, &id, &props, &region).await?,
                "AWS::DynamoDB::Table" => create_table(&ddb, &mut cx, &id, &props, &region).await?,
                "AWS::S3::Bucket" => create_bucket(&s3, &mut cx, &id, &props, stack).await?,
                "AWS::SNS::Topic" => {
                    // Its e-mail subscription (AlarmEmail) is not made locally.
                    let name = props["TopicName"]
                        .as_str()
                        .map(String::from)
                        .unwrap_or_else(|| format!("{stack}-{id}"));
                    let arn = sns
                        .create_topic()
                        .name(&name)
                        .send()
                        .await
                        .map_err(|e| aws_err(&id, shepherd::adapters::sdk_error(&e)))?
                        .topic_arn
                        .unwrap_or_default();
                    cx.attrs.insert(format!("{id}.TopicName"), name);
                    cx.refs.insert(id, arn);
                }
                "AWS::SSM::Parameter" => {
                    let name = scalar(&props["Name"]);
                    let value = scalar(&props["Value"]);
                    // As SSM: a Standard parameter holds 4 KB, an Advanced one 8 KB (the
                    // emulator takes any size).
                    let tier = props["Tier"].as_str().unwrap_or("Standard");
                    let limit = match tier {
                        "Standard" => crate::generate::SSM_STANDARD_LIMIT,
                        _ => crate::generate::SSM_ADVANCED_LIMIT,
                    };
                    if value.len() > limit {
                        return Err(aws_err(
                            &id,
                            format!(
                                "its value is {} bytes; a {tier} parameter holds {limit}",
                                value.len()
                            ),
                        ));
                    }
                    ssm.put_parameter()
                        .name(&name)
                        .value(value)
                        .r#type(ParameterType::String)
                        .tier(aws_sdk_ssm::types::ParameterTier::from(tier))
                        .overwrite(true)
                        .send()
                        .await
                        .map_err(|e| aws_err(&id, shepherd::adapters::sdk_error(&e)))?;
                    cx.refs.insert(id, name);
                }
                "AWS::IAM::ManagedPolicy" => {
                    let arn = create_managed_policy(sdk, stack, &id, &props).await?;
                    cx.refs.insert(id, arn);
                }
                other => tracing::debug!(resource = %id, r#type = other, "not provisioned locally"),
            }
        }
        if next.len() == before {
            let names: Vec<_> = next.iter().map(|(id, _)| id.clone()).collect();
            return Err(TemplateError::Unresolved(format!(
                "resources {names:?} (a cycle or a missing resource)"
            ))
            .into());
        }
        pending = next;
    }
    // Secrets the template declares but CloudFormation cannot create.
    for secret in t["Metadata"]["Shepherd::Secrets"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let s = cx.resolve(secret)?;
        ssm.put_parameter()
            .name(scalar(&s["ParameterName"]))
            .value(scalar(&s["LocalValue"]))
            .r#type(ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .map_err(|e| aws_err("Shepherd::Secrets", shepherd::adapters::sdk_error(&e)))?;
    }
    let roles = create_roles(sdk, &translate(template, &text)?, stack, &cx).await?;
    let functions = functions(&t, &cx, &roles)?;
    Ok(Provisioned {
        stack: stack.into(),
        context: cx,
        functions,
    })
}

/// A customer managed policy as CloudFormation would make it (named after the stack and
/// the logical id); provisioned again, its document becomes the default version.
async fn create_managed_policy(
    sdk: &aws_config::SdkConfig,
    stack: &str,
    id: &str,
    props: &Value,
) -> Result<String, ProvisionError> {
    let iam = aws_sdk_iam::Client::new(sdk);
    let err = |e: String| aws_err(id, e);
    let name: String = format!("{stack}-{id}").chars().take(128).collect();
    let arn = format!("arn:aws:iam::{ACCOUNT_ID}:policy/{name}");
    let document = props["PolicyDocument"].to_string();
    if document.len() > crate::generate::MANAGED_POLICY_LIMIT {
        return Err(err(format!(
            "its document is {} characters; IAM allows {} in a managed policy",
            document.len(),
            crate::generate::MANAGED_POLICY_LIMIT
        )));
    }
    let created = iam
        .create_policy()
        .policy_name(&name)
        .policy_document(&document)
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_entity_already_exists_exception()) =>
        {
            let versions = iam
                .list_policy_versions()
                .policy_arn(&arn)
                .send()
                .await
                .map_err(|e| err(shepherd::adapters::sdk_error(&e)))?;
            for v in versions.versions.unwrap_or_default() {
                if !v.is_default_version
                    && let Some(version) = v.version_id
                {
                    iam.delete_policy_version()
                        .policy_arn(&arn)
                        .version_id(version)
                        .send()
                        .await
                        .map_err(|e| err(shepherd::adapters::sdk_error(&e)))?;
                }
            }
            iam.create_policy_version()
                .policy_arn(&arn)
                .policy_document(&document)
                .set_as_default(true)
                .send()
                .await
                .map_err(|e| err(shepherd::adapters::sdk_error(&e)))?;
        }
        Err(e) => return Err(err(shepherd::adapters::sdk_error(&e))),
    }
    Ok(arn)
}

/// A bucket as CloudFormation would make it: named `<stack>-<logical id>` (lowercase), with
/// the template's versioning, default encryption, public access block, ownership and
/// lifecycle rules (what the emulator takes of them).
async fn create_bucket(
    s3: &aws_sdk_s3::Client,
    cx: &mut Context,
    id: &str,
    props: &Value,
    stack: &str,
) -> Result<(), ProvisionError> {
    use aws_sdk_s3::types::{
        BucketLifecycleConfiguration, BucketVersioningStatus, ExpirationStatus, LifecycleRule,
        LifecycleRuleFilter, NoncurrentVersionExpiration, PublicAccessBlockConfiguration,
        ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
        ServerSideEncryptionRule, VersioningConfiguration,
    };
    let err = |e: String| aws_err(id, e);
    let name: String = format!("{stack}-{id}")
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(63)
        .collect();
    match s3.create_bucket().bucket(&name).send().await {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_bucket_already_owned_by_you()) => {}
        Err(e) => return Err(err(shepherd::adapters::sdk_error(&e))),
    }
    if props["VersioningConfiguration"]["Status"] == "Enabled" {
        s3.put_bucket_versioning()
            .bucket(&name)
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| err(shepherd::adapters::sdk_error(&e)))?;
    }
    let sse = &props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
        ["SSEAlgorithm"];
    if let Some(alg) = sse.as_str() {
        let rule = ServerSideEncryptionRule::builder()
            .apply_server_side_encryption_by_default(
                ServerSideEncryptionByDefault::builder()
                    .sse_algorithm(ServerSideEncryption::from(alg))
                    .build()
                    .map_err(|e| err(e.to_string()))?,
            )
            .build();
        s3.put_bucket_encryption()
            .bucket(&name)
            .server_side_encryption_configuration(
                ServerSideEncryptionConfiguration::builder()
                    .rules(rule)
                    .build()
                    .map_err(|e| err(e.to_string()))?,
            )
            .send()
            .await
            .map_err(|e| err(shepherd::adapters::sdk_error(&e)))?;
    }
    let block = &props["PublicAccessBlockConfiguration"];
    if block.is_object() {
        let flag = |k: &str| {
            block[k]
                .as_bool()
                .or(block[k].as_str().map(|v| v == "true"))
        };
        s3.put_public_access_block()
            .bucket(&name)
            .public_access_block_configuration(
                PublicAccessBlockConfiguration::builder()
                    .set_block_public_acls(flag("BlockPublicAcls"))
                    .set_block_public_policy(flag("BlockPublicPolicy"))
                    .set_ignore_public_acls(flag("IgnorePublicAcls"))
                    .set_restrict_public_buckets(flag("RestrictPublicBuckets"))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| err(shepherd::adapters::sdk_error(&e)))?;
    }
    let mut rules = Vec::new();
    for r in props["LifecycleConfiguration"]["Rules"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let days = r["NoncurrentVersionExpiration"]["NoncurrentDays"]
            .as_i64()
            .or_else(|| {
                r["NoncurrentVersionExpiration"]["NoncurrentDays"]
                    .as_str()
                    .and_then(|d| d.parse().ok())
            });
        let mut rule = LifecycleRule::builder()
            .id(scalar(&r["Id"]))
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix("").build());
        if let Some(d) = days {
            rule = rule.noncurrent_version_expiration(
                NoncurrentVersionExpiration::builder()
                    .noncurrent_days(d as i32)
                    .build(),
            );
        }
        rules.push(rule.build().map_err(|e| err(e.to_string()))?);
    }
    if !rules.is_empty() {
        s3.put_bucket_lifecycle_configuration()
            .bucket(&name)
            .lifecycle_configuration(
                BucketLifecycleConfiguration::builder()
                    .set_rules(Some(rules))
                    .build()
                    .map_err(|e| err(e.to_string()))?,
            )
            .send()
            .await
            .map_err(|e| err(shepherd::adapters::sdk_error(&e)))?;
    }
    cx.attrs
        .insert(format!("{id}.Arn"), format!("arn:aws:s3:::{name}"));
    cx.refs.insert(id.into(), name);
    Ok(())
}

async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    cx: &mut Context,
    id: &str,
    props: &Value,
    region: &str,
) -> Result<(), ProvisionError> {
    let name = scalar(&props["QueueName"]);
    let mut req = sqs.create_queue().queue_name(&name);
    for (k, v) in props.as_object().into_iter().flatten() {
        let value = match k.as_str() {
            "QueueName" | "Tags" => continue,
            "RedrivePolicy" | "RedriveAllowPolicy" => {
                // SQS wants maxReceiveCount as a number inside the JSON string.
                let mut p = v.clone();
                if let Some(m) = p.get("maxReceiveCount").map(scalar) {
                    p["maxReceiveCount"] = Value::from(m.parse::<u64>().unwrap_or(5));
                }
                p.to_string()
            }
            _ => scalar(v),
        };
        req = req.attributes(QueueAttributeName::from(k.as_str()), value);
    }
    let url = req
        .send()
        .await
        .map_err(|e| aws_err(id, shepherd::adapters::sdk_error(&e)))?
        .queue_url
        .unwrap_or_default();
    let arn = format!("arn:aws:sqs:{region}:{ACCOUNT_ID}:{name}");
    cx.refs.insert(id.into(), url.clone());
    cx.attrs.insert(format!("{id}.Arn"), arn);
    cx.attrs.insert(format!("{id}.QueueUrl"), url);
    cx.attrs.insert(format!("{id}.QueueName"), name);
    Ok(())
}

async fn create_table(
    ddb: &aws_sdk_dynamodb::Client,
    cx: &mut Context,
    id: &str,
    props: &Value,
    region: &str,
) -> Result<(), ProvisionError> {
    let name = scalar(&props["TableName"]);
    let keys = |v: &Value| -> Vec<KeySchemaElement> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|k| {
                KeySchemaElement::builder()
                    .attribute_name(scalar(&k["AttributeName"]))
                    .key_type(KeyType::from(scalar(&k["KeyType"]).as_str()))
                    .build()
                    .expect("key has name and type")
            })
            .collect()
    };
    let mut req = ddb
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(keys(&props["KeySchema"])));
    for a in props["AttributeDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        req = req.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(scalar(&a["AttributeName"]))
                .attribute_type(ScalarAttributeType::from(
                    scalar(&a["AttributeType"]).as_str(),
                ))
                .build()
                .expect("definition complete"),
        );
    }
    for g in props["GlobalSecondaryIndexes"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let projection = Projection::builder()
            .projection_type(ProjectionType::from(
                scalar(&g["Projection"]["ProjectionType"]).as_str(),
            ))
            .set_non_key_attributes(
                g["Projection"]["NonKeyAttributes"]
                    .as_array()
                    .map(|a| a.iter().map(scalar).collect()),
            )
            .build();
        req = req.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(scalar(&g["IndexName"]))
                .set_key_schema(Some(keys(&g["KeySchema"])))
                .projection(projection)
                .build()
                .expect("index complete"),
        );
    }
    if let Some(view) = props["StreamSpecification"]["StreamViewType"].as_str() {
        req = req.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::from(view))
                .build()
                .expect("stream spec complete"),
        );
    }
    match req.send().await {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception()) => {}
        Err(e) => return Err(aws_err(id, shepherd::adapters::sdk_error(&e))),
    }
    if let Some(attr) = props["TimeToLiveSpecification"]["AttributeName"].as_str() {
        let _ = ddb
            .update_time_to_live()
            .table_name(&name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(attr)
                    .enabled(true)
                    .build()
                    .expect("ttl spec"),
            )
            .send()
            .await;
    }
    let described = ddb
        .describe_table()
        .table_name(&name)
        .send()
        .await
        .map_err(|e| aws_err(id, shepherd::adapters::sdk_error(&e)))?;
    let table = described
        .table
        .unwrap_or_else(|| aws_sdk_dynamodb::types::TableDescription::builder().build());
    cx.refs.insert(id.into(), name.clone());
    cx.attrs.insert(
        format!("{id}.Arn"),
        format!("arn:aws:dynamodb:{region}:{ACCOUNT_ID}:table/{name}"),
    );
    if let Some(s) = table.latest_stream_arn {
        cx.attrs.insert(format!("{id}.StreamArn"), s);
    }
    Ok(())
}

/// The template's functions with their environment (Globals merged) and event sources.
fn functions(
    t: &Value,
    cx: &Context,
    roles: &HashMap<String, String>,
) -> Result<Vec<LocalFunction>, ProvisionError> {
    let globals = cx.resolve(&t["Globals"]["Function"])?;
    let queue_urls: HashMap<String, String> = cx
        .attrs
        .iter()
        .filter_map(|(k, arn)| {
            k.strip_suffix(".Arn")
                .map(|id| (arn.clone(), cx.refs.get(id).cloned().unwrap_or_default()))
        })
        .collect();
    let mut out = Vec::new();
    for (id, r) in t["Resources"].as_object().into_iter().flatten() {
        if r["Type"] != "AWS::Serverless::Function" {
            continue;
        }
        let props = cx.resolve(&r["Properties"])?;
        let mut env: HashMap<String, String> = HashMap::new();
        for source in [
            &globals["Environment"]["Variables"],
            &props["Environment"]["Variables"],
        ] {
            for (k, v) in source.as_object().into_iter().flatten() {
                env.insert(k.clone(), scalar(v));
            }
        }
        // As Lambda: keys and values of the environment together at most 4 KB.
        let bytes: usize = env.iter().map(|(k, v)| k.len() + v.len()).sum();
        if bytes > crate::template::LAMBDA_ENVIRONMENT_LIMIT {
            return Err(ProvisionError::Aws {
                resource: id.clone(),
                reason: format!(
                    "its environment is {bytes} bytes; Lambda allows {} in all",
                    crate::template::LAMBDA_ENVIRONMENT_LIMIT
                ),
            });
        }
        // A resolved `!Ref` of a Number parameter is a string.
        let secs = |v: &Value| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        };
        let timeout = secs(&props["Timeout"])
            .or(secs(&globals["Timeout"]))
            .unwrap_or(3);
        let mut events = Vec::new();
        for (_, e) in props["Events"].as_object().into_iter().flatten() {
            let p = &e["Properties"];
            match e["Type"].as_str().unwrap_or_default() {
                "SQS" => {
                    let arn = scalar(&p["Queue"]);
                    let queue_url = queue_urls
                        .get(&arn)
                        .cloned()
                        .ok_or_else(|| TemplateError::Unresolved(arn.clone()))?;
                    let report = p["FunctionResponseTypes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|v| v == "ReportBatchItemFailures");
                    events.push(EventSource::Sqs {
                        queue_url,
                        batch_size: p["BatchSize"].as_i64().unwrap_or(10) as i32,
                        report_batch_item_failures: report,
                    });
                }
                "DynamoDB" => {
                    let number = |v: &Value| {
                        v.as_i64()
                            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    };
                    let on_failure = p["DestinationConfig"]["OnFailure"]["Destination"]
                        .as_str()
                        .map(|arn| {
                            queue_urls
                                .get(arn)
                                .cloned()
                                .ok_or_else(|| TemplateError::Unresolved(arn.to_string()))
                        })
                        .transpose()?;
                    events.push(EventSource::DynamoDbStream {
                        stream_arn: scalar(&p["Stream"]),
                        batch_size: number(&p["BatchSize"]).unwrap_or(100) as i32,
                        max_retries: number(&p["MaximumRetryAttempts"])
                            .filter(|n| *n >= 0)
                            .map(|n| n as u32),
                        on_failure,
                    });
                }
                "SNS" => {
                    let invoke = &props["EventInvokeConfig"];
                    let retries = invoke["MaximumRetryAttempts"]
                        .as_u64()
                        .or_else(|| invoke["MaximumRetryAttempts"].as_str()?.parse().ok())
                        .unwrap_or(2) as u32;
                    let on_failure = invoke["DestinationConfig"]["OnFailure"]["Destination"]
                        .as_str()
                        .map(|arn| {
                            queue_urls
                                .get(arn)
                                .cloned()
                                .ok_or_else(|| TemplateError::Unresolved(arn.to_string()))
                        })
                        .transpose()?;
                    events.push(EventSource::Sns {
                        topic_arn: scalar(&p["Topic"]),
                        retries,
                        on_failure,
                    });
                }
                "HttpApi" => {
                    // `ApiId: !Ref HttpApi` resolves to the placeholder `local:HttpApi`.
                    let api = scalar(&p["ApiId"]);
                    let settings = match api.strip_prefix("local:") {
                        Some(id) => {
                            cx.resolve(&t["Resources"][id]["Properties"]["DefaultRouteSettings"])?
                        }
                        None => Value::Null,
                    };
                    let num = |v: &Value| {
                        v.as_f64()
                            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    };
                    let throttle = match (
                        num(&settings["ThrottlingRateLimit"]),
                        num(&settings["ThrottlingBurstLimit"]),
                    ) {
                        (Some(rate), Some(burst)) => Some((rate, burst as u32)),
                        _ => None,
                    };
                    events.push(EventSource::Http {
                        path: scalar(&p["Path"]),
                        method: scalar(&p["Method"]),
                        throttle,
                    })
                }
                "ScheduleV2" | "Schedule" => {
                    let expr = scalar(&p["ScheduleExpression"]);
                    let every = rate(&expr).ok_or_else(|| {
                        TemplateError::Unsupported(format!("{id}: schedule {expr}"))
                    })?;
                    events.push(EventSource::Schedule { every });
                }
                other => {
                    return Err(
                        TemplateError::Unsupported(format!("{id}: event type {other}")).into(),
                    );
                }
            }
        }
        let role_arn = roles.get(id).cloned().ok_or_else(|| {
            TemplateError::Unresolved(format!("{id}: no role in the translated template"))
        })?;
        out.push(LocalFunction {
            role_arn,
            logical_id: id.clone(),
            binary: scalar(&r["Metadata"]["BuildProperties"]["Binary"]),
            handler: env
                .get(shepherd::wiring::HANDLER_VARIABLE)
                .cloned()
                .unwrap_or_default(),
            timeout_secs: timeout,
            env,
            events,
        });
    }
    Ok(out)
}

/// The template as SAM translates it (what CloudFormation deploys): the roles SAM makes for
/// each function, policy templates and event sources' managed policies included. Runs SAM's
/// own translator (`infra/translate.py`, from the project's virtualenv); the result is
/// cached by the template's content under `.local/translated/`.
pub fn translate(template: &Path, text: &str) -> Result<Value, ProvisionError> {
    use sha2::Digest;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let hash = hex::encode(&sha2::Sha256::digest(text.as_bytes())[..12]);
    let dir = root.join(".local/translated");
    let cached = dir.join(format!("{hash}.json"));
    if !cached.exists() {
        std::fs::create_dir_all(&dir)
            .map_err(|e| ProvisionError::Io(dir.display().to_string(), e))?;
        let python = std::env::var("SHEPHERD_PYTHON").unwrap_or_else(|_| {
            let venv = root.join(".venv/bin/python");
            if venv.exists() {
                venv.display().to_string()
            } else {
                "python3".into()
            }
        });
        // Unique per process and call: tests provision stacks from several threads.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!("{hash}.{}.{n}.tmp", std::process::id()));
        let out = std::process::Command::new(&python)
            .arg(root.join("infra/translate.py"))
            .arg(template)
            .arg(&tmp)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .output()
            .map_err(|e| ProvisionError::Translate(format!("cannot run {python}: {e}")))?;
        if !out.status.success() {
            return Err(ProvisionError::Translate(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        std::fs::rename(&tmp, &cached)
            .map_err(|e| ProvisionError::Io(cached.display().to_string(), e))?;
    }
    let json = std::fs::read_to_string(&cached)
        .map_err(|e| ProvisionError::Io(cached.display().to_string(), e))?;
    serde_json::from_str(&json).map_err(|e| ProvisionError::Translate(e.to_string()))
}

/// The local admin, whom the roles trust: locally the runtime plays the Lambda service's
/// part, so it, not `lambda.amazonaws.com`, assumes each function's role.
pub fn admin_arn() -> String {
    std::env::var("SHEPHERD_ADMIN_ARN")
        .unwrap_or_else(|_| format!("arn:aws:iam::{ACCOUNT_ID}:user/shepherd-admin"))
}

/// Creates (or updates) each function's role as the translated template defines it:
/// inline policies and managed policy ARNs. Returns function logical id -> role ARN.
async fn create_roles(
    sdk: &aws_config::SdkConfig,
    translated: &Value,
    stack: &str,
    cx: &Context,
) -> Result<HashMap<String, String>, ProvisionError> {
    let iam = aws_sdk_iam::Client::new(sdk);
    let resources = translated["Resources"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let trust = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": admin_arn()}, "Action": "sts:AssumeRole"}]
    })
    .to_string();
    let mut roles = HashMap::new();
    for (function, f) in &resources {
        if f["Type"] != "AWS::Lambda::Function" {
            continue;
        }
        let Some(role_id) = f["Properties"]["Role"]["Fn::GetAtt"][0].as_str() else {
            continue;
        };
        let props = cx.resolve(&resources[role_id]["Properties"])?;
        let name: String = format!("{stack}-{role_id}").chars().take(64).collect();
        let err = |e: String| aws_err(role_id, e);
        let created = iam
            .create_role()
            .role_name(&name)
            .assume_role_policy_document(&trust)
            .send()
            .await;
        let arn = match created {
            Ok(out) => out.role.map(|r| r.arn).unwrap_or_default(),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_entity_already_exists_exception()) =>
            {
                // Re-provisioned: keep the role, replace what it allows.
                let existing = iam
                    .list_role_policies()
                    .role_name(&name)
                    .send()
                    .await
                    .map_err(|e| err(shepherd::adapters::sdk_error(&e)))?;
                for policy in existing.policy_names {
                    iam.delete_role_policy()
                        .role_name(&name)
                        .policy_name(policy)
                        .send()
                        .await
                        .map_err(|e| err(shepherd::adapters::sdk_error(&e)))?;
                }
                format!("arn:aws:iam::{ACCOUNT_ID}:role/{name}")
            }
            Err(e) => return Err(err(shepherd::adapters::sdk_error(&e))),
        };
        for managed in props["ManagedPolicyArns"].as_array().into_iter().flatten() {
            iam.attach_role_policy()
                .role_name(&name)
                .policy_arn(scalar(managed))
                .send()
                .await
                .map_err(|e| err(shepherd::adapters::sdk_error(&e)))?;
        }
        for policy in props["Policies"].as_array().into_iter().flatten() {
            // SAM writes some of its own policies without a Version; IAM reads those as
            // 2008-10-17 and takes them, moto refuses them. The statements are the same.
            let mut doc = policy["PolicyDocument"].clone();
            if doc.get("Version").is_none() {
                doc["Version"] = "2012-10-17".into();
            }
            iam.put_role_policy()
                .role_name(&name)
                .policy_name(scalar(&policy["PolicyName"]))
                .policy_document(doc.to_string())
                .send()
                .await
                .map_err(|e| err(shepherd::adapters::sdk_error(&e)))?;
        }
        roles.insert(function.clone(), arn);
    }
    Ok(roles)
}
