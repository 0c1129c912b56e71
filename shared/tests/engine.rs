//! The engine on the in-memory adapter: the runtime, operator actions, the sweep and the
//! write path's conflict policies, in milliseconds. Fidelity to AWS is the emulator suite's
//! job (`tests/it`); this suite covers the engine's own logic quickly.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use shepherd::adapters::memory::Memory;
use shepherd::config::{Config, Definition, StackConfig};
use shepherd::domain::{
    Act, Action, Actor, Caller, Command, ErrorCode, PhaseStatus, ProductionStatus, Role, Scope,
    StepError,
};
use shepherd::ops::{Ops, OpsError};
use shepherd::pipeline::{Definition as PipelineDefinition, Pipelines};
use shepherd::ports::{
    Audio, ChatMessage, ChatRequest, Clock, Connector, GeneratedImage, ImageRequest, McpSession,
    Ports, Provider, SpeechRequest,
};
use shepherd::runtime::{Phase, PhaseContext, PhaseFunction, PhaseOutput, Stats};
use shepherd::write::{OnConflict, Transitioner, Written};

const T0: i64 = 1_800_000_000_000;
const PHASES: [&str; 2] = ["draft", "review"];

/// A provider that answers chat with the user's text, after failing as told.
#[derive(Default)]
struct Scripted {
    fail_next: std::sync::Mutex<Vec<StepError>>,
    calls: AtomicU32,
}

#[async_trait]
impl Provider for Scripted {
    async fn chat(&self, req: &ChatRequest, _key: &str) -> Result<String, StepError> {
        if let Some(e) = self.fail_next.lock().unwrap().pop() {
            return Err(e);
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(format!("answer to {}", req.messages[0].content))
    }
    async fn image(&self, _: &ImageRequest, _: &str) -> Result<GeneratedImage, StepError> {
        unimplemented!("not used by the test pipeline")
    }
    async fn speech(&self, _: &SpeechRequest, _: &str) -> Result<Audio, StepError> {
        unimplemented!("not used by the test pipeline")
    }
    async fn moderate(
        &self,
        _: &str,
        _: &str,
        _: &str,
    ) -> Result<shepherd::domain::moderation::Moderation, StepError> {
        unimplemented!("not used by the test pipeline")
    }
    async fn post_json(
        &self,
        _: &serde_json::Value,
        _: &str,
    ) -> Result<serde_json::Value, StepError> {
        unimplemented!("not used by the test pipeline")
    }
    async fn probe(&self) -> (String, bool) {
        ("scripted".into(), true)
    }
}

struct Connect(Arc<Scripted>);

impl Connector for Connect {
    fn provider(&self, _: &str, _: &Definition) -> Arc<dyn Provider> {
        self.0.clone()
    }
    fn mcp(&self, _: &str, _: &Definition) -> Arc<dyn McpSession> {
        unimplemented!("no MCP integration in the test registry")
    }
    fn scm(&self, _: &str, _: &Definition) -> Arc<dyn shepherd::ports::Scm> {
        unimplemented!("no source-control integration in the test registry")
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Text {
    text: String,
}
impl PhaseOutput for Text {}

/// Asks the provider once per run.
struct Draft;
impl Phase for Draft {
    const NAME: &'static str = "draft";
    type Output = Text;
    async fn run(&self, ctx: &PhaseContext) -> Result<Text, StepError> {
        let req = ChatRequest {
            model: "m".into(),
            messages: vec![ChatMessage::user(
                ctx.input["title"].as_str().unwrap_or_default().to_string(),
            )],
            response_format: None,
        };
        Ok(Text {
            text: ctx.tools.chat("draft", &req).await?,
        })
    }
}

/// Reads the draft's typed output.
struct Review;
impl Phase for Review {
    const NAME: &'static str = "review";
    type Output = Text;
    async fn run(&self, ctx: &PhaseContext) -> Result<Text, StepError> {
        let draft = ctx.output::<Draft>()?;
        Ok(Text {
            text: format!("reviewed: {}", draft.text),
        })
    }
}

/// The test pipeline: draft -> review, its input a titled brief.
fn pipelines() -> Arc<Pipelines> {
    pipelines_calling(&["chat"])
}

/// The test pipeline with its phases declaring `integrations`.
fn pipelines_calling(integrations: &[&str]) -> Arc<Pipelines> {
    versions(integrations, &[1])
}

/// The test pipeline's `versions`, alike but for their number.
fn versions(integrations: &[&str], versions: &[u32]) -> Arc<Pipelines> {
    let phase = |name: &str| {
        serde_json::json!({"name": name, "function": name, "max_tries": 5,
            "timeout_seconds": 60, "concurrency": 5, "integrations": integrations,
            "output": {"type": "object", "required": ["text"]}})
    };
    let definitions = versions.iter().map(|v| {
        let definition = serde_json::json!({
        "name": "test", "version": v,
        "input": {"type": "object", "required": ["account", "title"],
            "properties": {"account": {"type": "string"}, "title": {"type": "string", "x-editable": true},
                "topic": {"type": "string", "x-editable": true}, "scenes": {"type": "integer"},
                "auto_approve": {"type": "boolean"}}},
        "phases": PHASES.iter().map(|p| phase(p)).collect::<Vec<_>>(),
    });
        PipelineDefinition::parse("test.json", &definition.to_string()).unwrap()
    });
    Arc::new(Pipelines::from_definitions(definitions.collect()).unwrap())
}

struct World {
    mem: Arc<Memory>,
    provider: Arc<Scripted>,
    ports: Ports,
    config: Config,
    ops: Ops,
    functions: HashMap<&'static str, PhaseFunction>,
    receives: std::sync::Mutex<HashMap<String, u32>>,
}

fn env() -> HashMap<String, String> {
    [
        ("SHEPHERD_STATE_TABLE", "state".to_string()),
        ("SHEPHERD_IDEMPOTENCY_TABLE", "ledger".to_string()),
        ("SHEPHERD_AUDIT_TABLE", "audit".to_string()),
        ("SHEPHERD_QUEUE_PREFIX", "mem://q/t-".to_string()),
        ("SHEPHERD_INTEGRATIONS_PARAM", "/t/integrations".to_string()),
        ("SHEPHERD_PHASE_MAX_RETRIES", "3".to_string()),
        ("SHEPHERD_RETRY_BASE_SECS", "1".to_string()),
        ("SHEPHERD_LOST_DISPATCH_SECS", "60".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

impl World {
    fn new(approval_phases: &str) -> Self {
        Self::on(approval_phases, pipelines())
    }

    fn on(approval_phases: &str, pipelines: Arc<Pipelines>) -> Self {
        let mem = Arc::new(Memory::new(T0));
        mem.set_param(
            "/t/integrations",
            r#"{"chain":["primary"],"integrations":{"primary":{"base_url":"mem://provider","secret_param":"/t/key","kinds":["chat"]}}}"#,
        );
        let provider = Arc::new(Scripted::default());
        let ports = mem.ports(Arc::new(Connect(provider.clone())));
        let config = Config::from_map(&env(), pipelines.clone()).unwrap();
        let stack = StackConfig {
            topology: config.topology.clone(),
            approval_phases: approval_phases.into(),
            approval_ttl_secs: 60,
            approval_on_expiry: "fail".into(),
            integrations_param: "/t/integrations".into(),
            pipelines_param: String::new(),
            stack: "t".into(),
            default_monthly_allowance: 0,
            default_max_concurrent: 0,
            state_stream: String::new(),
            projector_failures: String::new(),
            webhook_queue: String::new(),
            webhook_secrets: String::new(),
            notify_topic: String::new(),
            publish_webhook: Default::default(),
            allow_loopback_webhooks: false,
        };
        let functions = Self::functions(&ports, &config);
        Self {
            ops: Ops::new(ports.clone(), stack, pipelines),
            mem,
            provider,
            ports,
            config,
            functions,
            receives: Default::default(),
        }
    }

    fn functions(ports: &Ports, config: &Config) -> HashMap<&'static str, PhaseFunction> {
        HashMap::from([
            (
                "draft",
                shepherd::wiring::phase_function(Arc::new(Draft), ports, config),
            ),
            (
                "review",
                shepherd::wiring::phase_function(Arc::new(Review), ports, config),
            ),
        ])
    }

    /// A deploy of other definitions: functions and operations on `pipelines`, the store kept.
    fn redeploy(&mut self, pipelines: Arc<Pipelines>) {
        self.config.pipelines = pipelines.clone();
        self.functions = Self::functions(&self.ports, &self.config);
        self.ops = Ops::new(self.ports.clone(), self.ops.stack().clone(), pipelines);
    }

    fn stats(&self, phase: &str) -> &Stats {
        &self.functions[phase].stats
    }

    /// Plays the event source mapping once for `phase`: receives what is visible, invokes
    /// the function, deletes what it did not report failed. Returns the failures' count.
    async fn deliver(&self, phase: &str) -> usize {
        let url = self.config.topology.queue(phase).unwrap().to_string();
        let got = self.ports.queue.receive(&url, 10, 360).await.unwrap();
        if got.is_empty() {
            return 0;
        }
        let mut event = SqsEvent::default();
        for m in &got {
            let mut r = SqsMessage::default();
            let count = {
                let mut receives = self.receives.lock().unwrap();
                let n = receives.entry(m.id.clone()).or_default();
                *n += 1;
                *n
            };
            r.message_id = Some(m.id.clone());
            r.receipt_handle = Some(m.receipt.clone());
            r.body = Some(m.body.clone());
            r.attributes
                .insert("ApproximateReceiveCount".into(), count.to_string());
            event.records.push(r);
        }
        let res = self.functions[phase].handle(event).await;
        let failed: Vec<String> = res
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect();
        for m in &got {
            if !failed.contains(&m.id) {
                self.ports.queue.delete(&url, &m.receipt).await.unwrap();
            }
        }
        failed.len()
    }

    /// Delivers every phase's queue until nothing is left to deliver.
    async fn settle(&self) {
        for _ in 0..20 {
            let mut any = false;
            for p in PHASES {
                let url = self.config.topology.queue(p).unwrap().to_string();
                if !self.ports.queue.peek(&url, 10).await.unwrap().is_empty() {
                    any = true;
                    self.deliver(p).await;
                }
            }
            if !any {
                return;
            }
        }
    }

    async fn start(&self) -> String {
        let brief = r#"{"account": "acme", "title": "Tides", "topic": "Why", "scenes": 1}"#;
        self.ops.start(brief, &operator()).await.unwrap().id
    }

    async fn get(&self, id: &str) -> shepherd::domain::Production {
        self.ports.productions.get(id).await.unwrap().unwrap()
    }
}

fn caller(role: Role, scope: Scope) -> Caller {
    Caller::new(Actor("operator:test".into()), role, scope)
}

fn operator() -> Caller {
    caller(Role::Operator, Scope::Stack)
}

#[tokio::test]
async fn a_production_runs_every_phase_and_its_audit_projects_from_the_committed_writes() {
    let w = World::new("");
    let id = w.start().await;
    w.settle().await;
    let p = w.get(&id).await;
    assert_eq!(p.status, ProductionStatus::Completed, "{p:#?}");
    let outputs = w.ops.outputs(&p).await.unwrap();
    assert_eq!(outputs["review"]["text"], "reviewed: answer to Tides");
    assert_eq!(w.provider.calls.load(Ordering::SeqCst), 1);

    let writes = w.mem.committed();
    let done = shepherd::audit::project(w.ports.audit.as_ref(), w.ports.accounts.as_ref(), &writes)
        .await
        .unwrap();
    assert_eq!(done.events, 4, "created, 2 x succeeded, completed");
    assert_eq!(done.slots, 1, "completion released the slot");
    let usage = w.ops.account_usage("acme", &operator()).await.unwrap();
    assert!(usage.active.is_empty());
}

#[tokio::test]
async fn a_production_pinned_to_a_version_no_longer_deployed_fails_naming_it_and_is_listed() {
    let mut w = World::on("", versions(&["chat"], &[1]));
    let id = w.start().await;
    // A deploy that replaced v1 by v2 while the production's first message waited.
    w.redeploy(versions(&["chat"], &[2]));
    w.settle().await;
    let p = w.get(&id).await;
    assert_eq!(p.status, ProductionStatus::Failed, "{p:#?}");
    let error = p.phase("draft").unwrap().last_error.clone().unwrap();
    assert_eq!(error.code.as_str(), "pipeline_not_deployed");
    assert!(
        error
            .detail
            .starts_with("pipeline test v1 is not deployed (this function has test v2)"),
        "{}",
        error.detail
    );
    assert_eq!(
        w.provider.calls.load(Ordering::SeqCst),
        0,
        "nothing was called"
    );
    let listed = w.ops.pipelines_in_use(&operator()).await.unwrap();
    let seen: Vec<(u32, bool, u64)> = listed
        .iter()
        .map(|p| (p.version, p.deployed, p.open))
        .collect();
    assert_eq!(seen, [(1, false, 1), (2, true, 0)]);
    // Deployed again, the retry finishes it on v1.
    w.redeploy(versions(&["chat"], &[1, 2]));
    w.ops.act(&id, Act::RetryPhase, &operator()).await.unwrap();
    w.settle().await;
    let p = w.get(&id).await;
    assert_eq!(
        (p.status, p.pipeline_version),
        (ProductionStatus::Completed, 1)
    );
}

#[tokio::test]
async fn a_call_the_phase_definition_does_not_declare_fails_the_phase_and_reaches_no_provider() {
    let w = World::on("", pipelines_calling(&["image"]));
    let id = w.start().await;
    w.settle().await;
    let p = w.get(&id).await;
    assert_eq!(p.status, ProductionStatus::Failed, "{p:#?}");
    let error = p.phase("draft").unwrap().last_error.clone().unwrap();
    assert_eq!(error.code.as_str(), "integration_not_declared");
    assert_eq!(
        error.detail,
        "phase draft called chat but its definition's integrations are [image]"
    );
    assert_eq!(w.provider.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_duplicate_is_acknowledged_and_a_malformed_message_is_quarantined() {
    let w = World::new("");
    let id = w.start().await;
    let url = w.config.topology.queue("draft").unwrap().to_string();
    let body = shepherd::protocol::PhaseMessage::new(&id, "draft", 1).out("copy");
    w.ports.queue.send_batch(&url, &[body]).await.unwrap();
    let poison = shepherd::ports::OutMessage {
        id: "p".into(),
        body: "{not json".into(),
        attributes: vec![],
        delay: None,
    };
    w.ports.queue.send_batch(&url, &[poison]).await.unwrap();
    assert_eq!(w.deliver("draft").await, 0, "nothing comes back");
    let s = w.stats("draft");
    assert_eq!(Stats::get(&s.claimed), 1);
    assert_eq!(Stats::get(&s.duplicate) + Stats::get(&s.stale), 1);
    assert_eq!(Stats::get(&s.poison), 1);
    let dlq = w.mem.messages(w.config.topology.dlq("draft").unwrap());
    assert_eq!(dlq.len(), 1);
    assert!(dlq[0].attributes["shepherd_error"].starts_with("malformed_message"));
}

#[tokio::test]
async fn a_retryable_error_backs_off_and_the_spent_budget_dead_letters_to_the_dlq() {
    let w = World::new("");
    let unavailable = || StepError::retryable(ErrorCode::ProviderUnavailable, "503");
    *w.provider.fail_next.lock().unwrap() = vec![unavailable(), unavailable(), unavailable()];
    let id = w.start().await;
    for receive in 1..=3 {
        let back = if receive < 3 { 1 } else { 0 };
        assert_eq!(w.deliver("draft").await, back, "receive {receive}");
        w.mem.advance(60_000);
    }
    let p = w.get(&id).await;
    assert_eq!(p.status, ProductionStatus::DeadLettered);
    let draft = p.phase("draft").unwrap();
    assert_eq!((draft.attempt, draft.error_count), (1, 3));
    assert_eq!(Stats::get(&w.stats("draft").retried), 2);
    assert_eq!(Stats::get(&w.stats("draft").dead_lettered), 1);
    let dlq = w.mem.messages(w.config.topology.dlq("draft").unwrap());
    assert_eq!(
        dlq.len(),
        1,
        "moved by the runtime, not left to SQS's receive count"
    );
    let queue = w.mem.messages(w.config.topology.queue("draft").unwrap());
    assert!(queue.is_empty());
}

#[tokio::test]
async fn a_wait_holds_the_message_without_spending_the_budget_and_resumes() {
    let w = World::new("");
    let waits = (0..12).map(|_| {
        StepError::wait(
            ErrorCode::IntegrationUnavailable,
            "primary (disabled)",
            None,
        )
    });
    *w.provider.fail_next.lock().unwrap() = waits.collect();
    let id = w.start().await;
    for _ in 0..12 {
        assert_eq!(
            w.deliver("draft").await,
            0,
            "re-sent with a delay, not retried"
        );
        w.mem.advance(300_000);
    }
    let held = w.get(&id).await;
    let draft = held.phase("draft").unwrap();
    assert_eq!(held.status, ProductionStatus::Running);
    assert_eq!((draft.attempt, draft.retries, draft.holds), (1, 0, 12));
    assert_eq!(Stats::get(&w.stats("draft").held), 12);
    let alarms = w
        .ops
        .alarms(None, 1000, None, &operator())
        .await
        .unwrap()
        .items;
    assert!(
        alarms.iter().any(|a| a.kind == "production_waiting"
            && a.subject == "draft"
            && a.affected == [id.clone()]),
        "one alarm for the phase, naming the production that waits: {alarms:?}"
    );
    // The provider is back: the next delivery runs, the alarm is resolved.
    w.settle().await;
    assert_eq!(w.get(&id).await.status, ProductionStatus::Completed);
    let alarms = w
        .ops
        .alarms(None, 1000, None, &operator())
        .await
        .unwrap()
        .items;
    let waiting = alarms
        .iter()
        .find(|a| a.kind == "production_waiting")
        .unwrap();
    assert_eq!(
        waiting.status,
        shepherd::domain::alarms::AlarmStatus::Resolved
    );
    assert!(waiting.affected.is_empty(), "{waiting:?}");
}

#[tokio::test]
async fn operators_are_refused_by_availability_role_and_scope_and_nothing_changes() {
    let w = World::new("draft");
    let id = w.start().await;
    w.settle().await;
    let waiting = w.get(&id).await;
    assert_eq!(waiting.status, ProductionStatus::AwaitingApproval);

    let err = w.ops.act(&id, Act::Resume, &operator()).await.unwrap_err();
    assert!(
        matches!(&err, OpsError::Conflict { available, .. } if available.contains(&Action::Approve)),
        "{err}"
    );
    let viewer = caller(Role::Viewer, Scope::Stack);
    let err = w.ops.act(&id, Act::Approve, &viewer).await.unwrap_err();
    assert!(matches!(err, OpsError::Forbidden(_)), "{err}");
    let globex = caller(Role::Admin, Scope::Account("globex".into()));
    let err = w.ops.act(&id, Act::Cancel, &globex).await.unwrap_err();
    assert!(matches!(err, OpsError::NotFound(_)), "{err}");
    assert_eq!(w.get(&id).await, waiting, "nothing changed");

    let reject = Act::Reject {
        feedback: "shorter".into(),
        phase: None,
    };
    w.ops.act(&id, reject, &operator()).await.unwrap();
    w.settle().await;
    assert_eq!(
        w.provider.calls.load(Ordering::SeqCst),
        2,
        "a new call for the new revision"
    );
    w.ops.act(&id, Act::Approve, &operator()).await.unwrap();
    w.settle().await;
    assert_eq!(w.get(&id).await.status, ProductionStatus::Completed);
}

#[tokio::test]
async fn the_write_path_redecides_or_gives_up_on_a_conflict_as_its_caller_asks() {
    let w = World::new("");
    let id = w.start().await;
    let stale = w.get(&id).await;
    // Someone else writes first: the production is paused.
    w.ops.act(&id, Act::Pause, &operator()).await.unwrap();
    let t = Transitioner::new(
        w.ports.productions.clone(),
        w.ports.alarms.clone(),
        w.ports.clock.clone(),
    );
    let actor = Actor("test".into());
    let cancel: Command = Act::Cancel.into();
    let gave_up = t
        .write(
            stale.clone(),
            cancel.clone(),
            &actor,
            &[],
            None,
            OnConflict::GiveUp,
        )
        .await
        .unwrap();
    assert!(matches!(gave_up, Written::Conflicted), "{gave_up:?}");
    let redecided = t
        .write(
            stale.clone(),
            cancel,
            &actor,
            &[],
            None,
            OnConflict::Redecide(3),
        )
        .await
        .unwrap();
    let Written::Committed(done) = redecided else {
        panic!("{redecided:?}")
    };
    assert_eq!(done.production.status, ProductionStatus::Cancelled);
    assert_eq!(
        done.production.version,
        stale.version + 2,
        "decided on the paused state"
    );
    let refused = t
        .write(
            done.production.clone(),
            Act::Pause.into(),
            &actor,
            &[],
            None,
            OnConflict::GiveUp,
        )
        .await
        .unwrap();
    assert!(matches!(refused, Written::Refused(_)), "{refused:?}");
}

#[tokio::test]
async fn the_sweep_redispatches_a_lost_dispatch_and_a_worker_death_is_reconciled() {
    let w = World::new("");
    let id = w.start().await;
    // The first message is lost.
    let url = w.config.topology.queue("draft").unwrap().to_string();
    for m in w.ports.queue.receive(&url, 10, 0).await.unwrap() {
        w.ports.queue.delete(&url, &m.receipt).await.unwrap();
    }
    let sweeper = shepherd::wiring::sweeper(&w.ports, &w.config);
    w.mem.advance(61_000);
    let report = sweeper.sweep().await.unwrap();
    assert_eq!(report.redispatched, 1, "{report:?}");

    // The worker dies holding the claim: its message comes back after the lease.
    let claimed = w
        .ports
        .productions
        .claim(&id, "draft", 1, w.mem.now() + 1_000, w.mem.now())
        .await
        .unwrap();
    assert!(matches!(claimed, shepherd::ports::ClaimOutcome::Claimed(_)));
    w.mem.advance(2_000);
    w.settle().await;
    let p = w.get(&id).await;
    assert_eq!(p.status, ProductionStatus::Completed, "{p:#?}");
    assert_eq!(p.phase("draft").unwrap().attempt, 2);
    assert_eq!(p.phase("draft").unwrap().status, PhaseStatus::Succeeded);
    assert_eq!(Stats::get(&w.stats("draft").reconciled), 1);
}

#[tokio::test]
async fn a_keyed_start_repeated_returns_the_first_production_until_the_key_expires() {
    let w = World::new("");
    let brief = r#"{"account": "acme", "title": "Tides", "topic": "Why", "scenes": 1}"#;
    let reordered = r#"{"scenes": 1, "topic": "Why", "title": "Tides", "account": "acme"}"#;
    let (first, repeated) = w
        .ops
        .start_once(None, brief, Some("k1"), &operator())
        .await
        .unwrap();
    assert!(!repeated);
    let (again, repeated) = w
        .ops
        .start_once(None, reordered, Some("k1"), &operator())
        .await
        .unwrap();
    assert!(repeated, "the same brief, however written");
    assert_eq!(again.id, first.id);
    let other = r#"{"account": "acme", "title": "Other", "topic": "Why", "scenes": 1}"#;
    let err = w
        .ops
        .start_once(None, other, Some("k1"), &operator())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OpsError::KeyReused { production, .. } if *production == first.id),
        "{err}"
    );
    for bad in ["", "has space", &"x".repeat(256)] {
        let err = w
            .ops
            .start_once(None, brief, Some(bad), &operator())
            .await
            .unwrap_err();
        assert!(matches!(err, OpsError::Invalid(_)), "{bad:?}: {err}");
    }
    w.mem.advance(shepherd::ops::START_KEY_TTL + 1);
    let (later, repeated) = w
        .ops
        .start_once(None, brief, Some("k1"), &operator())
        .await
        .unwrap();
    assert!(!repeated && later.id != first.id, "a key holds 24 hours");
}

// ---- Schedules (F-12) -----------------------------------------------------------------

use shepherd::domain::schedule::{MissReason, Origin, ScheduleSpec, SlotOutcome};

const MIN: i64 = 60_000;

fn admin() -> Caller {
    caller(Role::Admin, Scope::Account("acme".into()))
}

fn every(minutes: u32, extra: serde_json::Value) -> ScheduleSpec {
    let mut v = serde_json::json!({"name": "tides", "account": "acme",
        "input": {"title": "Tides", "topic": "Why", "scenes": 1}, "every_minutes": minutes});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    serde_json::from_value(v).unwrap()
}

/// Moves the clock to `at` and runs one scheduler tick.
async fn tick_at(w: &World, at: i64) -> shepherd::ops::ScheduleTick {
    w.mem.advance(at - w.mem.now());
    w.ops.run_schedules().await.unwrap()
}

async fn slots(w: &World, id: &str) -> Vec<(i64, SlotOutcome)> {
    let d = w.ops.schedule(id, &operator(), 100, None).await.unwrap();
    let mut v: Vec<_> = d.history.into_iter().map(|r| (r.slot, r.outcome)).collect();
    v.sort_by_key(|(t, _)| *t);
    v
}

#[tokio::test]
async fn a_schedule_fires_each_slot_once_and_a_retried_tick_starts_nothing_more() {
    let w = World::new("");
    let s = w
        .ops
        .create_schedule(every(10, serde_json::json!({})), &admin())
        .await
        .unwrap();
    let first = s.next_slot;
    assert!(
        first > T0 && first % (10 * MIN) == 0,
        "the next multiple of 10 minutes"
    );
    assert_eq!(
        tick_at(&w, first - 1).await.due,
        0,
        "nothing due before the slot"
    );
    let t = tick_at(&w, first + 20_000).await;
    assert_eq!((t.due, t.fired, t.missed), (1, 1, 0), "{t:?}");
    // The same tick again (a retry, or a second tick at once): not due any more.
    let again = w.ops.run_schedules().await.unwrap();
    assert_eq!((again.due, again.fired), (0, 0));
    let history = slots(&w, &s.id).await;
    let SlotOutcome::Fired { production, origin } = &history[0].1 else {
        panic!("{history:?}")
    };
    assert_eq!(*origin, Origin::OnTime);
    let p = w.get(production).await;
    assert_eq!(p.account, "acme");
    let listed = w.ops.schedules(None, &operator(), 10, None).await.unwrap();
    assert_eq!(
        listed.items[0].last_fired.as_ref().unwrap().production,
        *production
    );
    assert_eq!(listed.items[0].next_slot, first + 10 * MIN);
}

#[tokio::test]
async fn after_downtime_latest_fires_once_and_every_missed_slot_is_recorded_alarmed_and_audited() {
    let w = World::new("");
    let s = w
        .ops
        .create_schedule(every(10, serde_json::json!({"overlap": "allow"})), &admin())
        .await
        .unwrap();
    // No tick for five slots; the sixth tick comes 5 minutes after the newest.
    let t = tick_at(&w, s.next_slot + 45 * MIN).await;
    assert_eq!((t.fired, t.missed), (1, 4), "{t:?}");
    let h = slots(&w, &s.id).await;
    assert!(
        h[..4].iter().all(|(_, o)| matches!(
            o,
            SlotOutcome::Missed {
                reason: MissReason::Downtime,
                ..
            }
        )),
        "{h:?}"
    );
    assert!(matches!(
        h[4].1,
        SlotOutcome::Fired {
            origin: Origin::CatchUp,
            ..
        }
    ));
    let alarms = w.ops.alarms(None, 10, None, &operator()).await.unwrap();
    let a = alarms
        .items
        .iter()
        .find(|a| a.subject == s.id)
        .expect("the schedule's alarm");
    assert!(a.detail.contains("missed 4 slot(s)"), "{}", a.detail);
    let missed = w
        .ops
        .audit(
            &shepherd::ports::AuditQuery::Type {
                event_type: "schedule.missed".into(),
                since: 0,
                until: 253_402_300_799_999,
                account: Some("acme".into()),
            },
            100,
            None,
            &operator(),
        )
        .await
        .unwrap();
    assert_eq!(missed.items.len(), 4);
    assert!(
        missed.items[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("downtime")
    );
}

#[tokio::test]
async fn overlap_skip_misses_a_slot_while_the_last_production_is_open() {
    let w = World::new("");
    let s = w
        .ops
        .create_schedule(every(10, serde_json::json!({})), &admin())
        .await
        .unwrap();
    assert_eq!(tick_at(&w, s.next_slot).await.fired, 1);
    // The production was not worked: still open at the next slot.
    let t = tick_at(&w, s.next_slot + 10 * MIN).await;
    assert_eq!((t.fired, t.missed), (0, 1));
    let h = slots(&w, &s.id).await;
    assert!(
        matches!(
            h[1].1,
            SlotOutcome::Missed {
                reason: MissReason::Overlap,
                ..
            }
        ),
        "{h:?}"
    );
    // Worked to the end: the next slot fires.
    w.settle().await;
    assert_eq!(tick_at(&w, s.next_slot + 20 * MIN).await.fired, 1);
}

#[tokio::test]
async fn pause_trigger_backfill_and_roles() {
    let w = World::new("");
    let viewer = caller(Role::Viewer, Scope::Account("acme".into()));
    let op = caller(Role::Operator, Scope::Account("acme".into()));
    let spec = every(10, serde_json::json!({"overlap": "allow"}));
    assert!(matches!(
        w.ops.create_schedule(spec.clone(), &op).await,
        Err(OpsError::Forbidden(_))
    ));
    let s = w.ops.create_schedule(spec, &admin()).await.unwrap();
    assert!(matches!(
        w.ops.pause_schedule(&s.id, "freeze", &viewer).await,
        Err(OpsError::Forbidden(_))
    ));
    let other = caller(Role::Admin, Scope::Account("globex".into()));
    assert!(matches!(
        w.ops.pause_schedule(&s.id, "x", &other).await,
        Err(OpsError::NotFound(_))
    ));

    w.ops
        .pause_schedule(&s.id, "release freeze", &op)
        .await
        .unwrap();
    assert!(matches!(
        w.ops.pause_schedule(&s.id, "again", &op).await,
        Err(OpsError::Busy(_))
    ));
    let t = tick_at(&w, s.next_slot + 15 * MIN).await;
    assert_eq!((t.fired, t.missed), (0, 2));
    assert!(slots(&w, &s.id).await.iter().all(|(_, o)| matches!(
        o,
        SlotOutcome::Missed {
            reason: MissReason::Paused,
            ..
        }
    )));
    // Trigger works while paused; resume brings the slots back.
    let (_, production) = w.ops.trigger_schedule(&s.id, &op).await.unwrap();
    assert_eq!(w.get(&production).await.account, "acme");
    w.ops.resume_schedule(&s.id, &op).await.unwrap();
    assert_eq!(tick_at(&w, s.next_slot + 20 * MIN).await.fired, 1);

    // Backfill the two paused slots, one a tick.
    let b = w
        .ops
        .backfill_schedule(&s.id, s.next_slot, s.next_slot + 10 * MIN, 1, &op)
        .await
        .unwrap();
    assert!(b.backfill.is_some());
    assert!(matches!(
        w.ops
            .backfill_schedule(&s.id, s.next_slot, s.next_slot, 1, &op)
            .await,
        Err(OpsError::Busy(_))
    ));
    assert_eq!(tick_at(&w, s.next_slot + 21 * MIN).await.fired, 1);
    assert_eq!(tick_at(&w, s.next_slot + 22 * MIN).await.fired, 1);
    assert_eq!(
        tick_at(&w, s.next_slot + 23 * MIN).await.due,
        0,
        "the backfill is done"
    );
    let backfilled = slots(&w, &s.id)
        .await
        .iter()
        .filter(|(_, o)| {
            matches!(
                o,
                SlotOutcome::Fired {
                    origin: Origin::Backfill,
                    ..
                }
            )
        })
        .count();
    assert_eq!(backfilled, 2);
    w.ops.delete_schedule(&s.id, &admin()).await.unwrap();
    assert!(matches!(
        w.ops.schedule(&s.id, &op, 10, None).await,
        Err(OpsError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_schedule_whose_input_breaks_the_pipeline_schema_is_refused_naming_the_field() {
    let w = World::new("");
    let mut spec = every(10, serde_json::json!({}));
    spec.input = serde_json::json!({"title": "Tides", "scenes": "many"});
    let e = w.ops.create_schedule(spec, &admin()).await.unwrap_err();
    assert!(matches!(e, OpsError::InvalidInput(_)), "{e:?}");
    assert!(
        e.to_string().contains("scenes") || e.to_string().contains("topic"),
        "{e}"
    );
    let mut spec = every(10, serde_json::json!({}));
    spec.time_zone = "Nowhere/City".into();
    let e = w.ops.create_schedule(spec, &admin()).await.unwrap_err();
    assert!(e.to_string().contains("IANA"), "{e}");
    assert!(
        w.ops
            .schedules(None, &operator(), 10, None)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

// ---- Watchers (F-13) ------------------------------------------------------------------

/// A feed that answers with the entries it is given (an Atom document).
#[derive(Default)]
struct Feed(std::sync::Mutex<Vec<(String, String)>>);

#[async_trait]
impl shepherd::ports::Fetch for Feed {
    async fn get(
        &self,
        _url: &str,
        _headers: &[(&str, String)],
    ) -> Result<shepherd::ports::Fetched, String> {
        let mut xml = String::from(
            r#"<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title><id>urn:t</id><updated>2026-12-07T10:00:00Z</updated>"#,
        );
        for (id, title) in self.0.lock().unwrap().iter().rev() {
            xml.push_str(&format!(
                "<entry><id>{id}</id><title>{title}</title><summary>About {title}</summary><updated>2026-12-07T10:00:00Z</updated></entry>"
            ));
        }
        xml.push_str("</feed>");
        Ok(shepherd::ports::Fetched {
            status: 200,
            headers: vec![],
            body: xml.into_bytes(),
        })
    }
}

#[tokio::test]
async fn a_watcher_killed_between_its_starts_and_its_cursor_starts_each_item_once() {
    let mut w = World::new("");
    let feed = Arc::new(Feed::default());
    let mut ports = w.ports.clone();
    ports.fetch = feed.clone();
    w.ops = Ops::new(ports, w.ops.stack().clone(), w.ops.pipelines().clone());
    let spec: shepherd::domain::events::WatcherSpec = serde_json::from_value(serde_json::json!({
        "name": "blog", "account": "acme", "kind": "feed", "url": "https://blog.example.com/feed",
        "mapping": {"title": "/title", "topic": "/summary", "scenes": {"value": 1}}}))
    .unwrap();
    let watcher = w.ops.create_watcher(spec, &admin()).await.unwrap();
    feed.0.lock().unwrap().push(("urn:a".into(), "Old".into()));
    assert_eq!(w.ops.run_watchers().await.unwrap().items, 0, "primed");
    feed.0
        .lock()
        .unwrap()
        .push(("urn:b".into(), "Spring tides".into()));
    feed.0
        .lock()
        .unwrap()
        .push(("urn:c".into(), "Neap tides".into()));
    // The tick starts both, then dies before its cursor is written.
    w.mem.advance(6 * MIN);
    w.mem.fail_watcher_commits(1);
    let crashed = w.ops.run_watchers().await.unwrap();
    assert_eq!(crashed.errors, 1, "{crashed:?}");
    // Restarted: the same items again; their keys start nothing twice.
    let again = w.ops.run_watchers().await.unwrap();
    assert_eq!(again.polled, 1, "{again:?}");
    let events = w
        .ops
        .events(&Default::default(), &operator(), 100, None)
        .await
        .unwrap()
        .items;
    let started: Vec<_> = events
        .iter()
        .filter(|e| e.outcome == shepherd::domain::events::EventOutcome::Started)
        .collect();
    assert_eq!(started.len(), 2, "{events:#?}");
    let productions: std::collections::BTreeSet<_> =
        started.iter().map(|e| e.production.clone()).collect();
    assert_eq!(productions.len(), 2, "one production per item");
    assert!(events.iter().all(|e| e.source == watcher.source()));
    // And the cursor moved on: the next poll finds nothing new.
    w.mem.advance(6 * MIN);
    assert_eq!(w.ops.run_watchers().await.unwrap().items, 0);
}

/// Lines a JSON subscriber writes, kept for the test.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Seed 002: "the worker logs on every line" the production it works on. Every line a
/// production's run writes (claims, phases, tool calls, commits, hand-offs), in the JSON
/// format Lambda ships, carries its production, phase, attempt and trace id.
#[tokio::test]
async fn every_log_line_of_a_run_names_its_production_phase_attempt_and_trace() {
    let w = World::new("");
    let id = w.start().await;
    let trace = w.get(&id).await.trace_id;
    let out = Captured::default();
    let sink = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || sink.clone())
        .finish();
    {
        let _guard = tracing::subscriber::set_default(subscriber);
        w.settle().await;
    }
    assert_eq!(
        w.get(&id).await.status,
        shepherd::domain::ProductionStatus::Completed
    );
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= PHASES.len(), "{text}");
    let mut phases = std::collections::BTreeSet::new();
    for l in &lines {
        let span = &l["span"];
        assert_eq!(span["production"], id.as_str(), "{l}");
        assert_eq!(span["trace_id"], trace.as_str(), "{l}");
        assert!(span["attempt"].is_u64(), "{l}");
        phases.insert(span["phase"].as_str().unwrap().to_string());
    }
    assert_eq!(phases.len(), PHASES.len(), "{phases:?}");
}

/// Real SQS under short polling: each receive asks a sample of the servers, so it may
/// answer nothing, or only some messages, while messages wait. Long polling asks all.
struct Sampling {
    inner: Arc<dyn shepherd::ports::Queue>,
    calls: AtomicU32,
}

#[async_trait]
impl shepherd::ports::Queue for Sampling {
    async fn receive(
        &self,
        url: &str,
        _max: i32,
        visibility: i32,
    ) -> Result<Vec<shepherd::protocol::InMessage>, shepherd::ports::QueueError> {
        // Every other short poll finds nothing; the others find one message.
        if self.calls.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
            return Ok(vec![]);
        }
        self.inner.receive(url, 1, visibility).await
    }
    async fn receive_from_all(
        &self,
        url: &str,
        max: i32,
        visibility: i32,
    ) -> Result<Vec<shepherd::protocol::InMessage>, shepherd::ports::QueueError> {
        self.inner.receive(url, max, visibility).await
    }
    async fn delete(&self, url: &str, receipt: &str) -> Result<(), shepherd::ports::QueueError> {
        self.inner.delete(url, receipt).await
    }
    async fn send_batch(
        &self,
        url: &str,
        messages: &[shepherd::protocol::OutMessage],
    ) -> Result<Vec<String>, shepherd::ports::QueueError> {
        self.inner.send_batch(url, messages).await
    }
    async fn change_visibility(
        &self,
        url: &str,
        receipt: &str,
        seconds: i32,
    ) -> Result<(), shepherd::ports::QueueError> {
        self.inner.change_visibility(url, receipt, seconds).await
    }
}

#[tokio::test]
async fn dlq_show_and_list_find_every_message_where_short_polling_would_sample() {
    let mut w = World::new("");
    let mut ports = w.ports.clone();
    ports.queue = Arc::new(Sampling {
        inner: w.ports.queue.clone(),
        calls: AtomicU32::new(0),
    });
    w.ops = Ops::new(ports, w.ops.stack().clone(), w.ops.pipelines().clone());
    let dlq = w.config.topology.dlqs["review"].clone();
    let messages: Vec<shepherd::protocol::OutMessage> = (0..25)
        .map(|i| shepherd::protocol::OutMessage {
            id: format!("m{i}"),
            body: format!("not a phase message {i}"),
            attributes: vec![],
            delay: None,
        })
        .collect();
    for batch in messages.chunks(10) {
        assert!(
            w.ports
                .queue
                .send_batch(&dlq, batch)
                .await
                .unwrap()
                .is_empty()
        );
    }
    let listed = w
        .ops
        .dlq_list(Some("review"), 100, &operator())
        .await
        .unwrap();
    assert_eq!(listed.len(), 25, "every message, once");
    let last = listed.last().unwrap().message_id.clone();
    let (shown, _) = w.ops.dlq_show(&last, &operator()).await.unwrap();
    assert_eq!(shown.message_id, last);
    assert!(shown.malformed);
    // What was read is visible again for the next operator.
    let again = w.ops.dlq_list(None, 100, &operator()).await.unwrap();
    assert_eq!(again.len(), 25);
    let err = w
        .ops
        .dlq_show("no-such-message", &operator())
        .await
        .unwrap_err();
    assert!(matches!(err, OpsError::NotFound(_)), "{err}");
}
