//! Test harness: each test provisions its own stack (a unique stack name) from
//! `template.yaml` into the emulator, runs its own local runtime and fake provider, and
//! drives productions through the same operations the CLI uses.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shepherd::domain::{Actor, Caller, Production, Role, Scope};
use shepherd::ops::Ops;
use shepherd::runtime::Stats;
use shepherd_local::provider::ProviderServer;
use shepherd_local::provision::{Provisioned, provision};
use shepherd_local::runtime::{Clients, LocalRuntime};

pub mod feed;
pub mod guide;
pub mod receiver;

pub use shepherd_local::agent::AgentServer;
pub use shepherd_local::mcp::McpServer;
pub use shepherd_local::provider::{Fault, FaultRule};
pub use shepherd_local::scm::ScmServer;

/// The emulator's address, set by `infra/test.sh`, checked once per test binary: without
/// a reachable emulator and the local admin's keys the whole binary stops with one line
/// saying so (exit 2), instead of every test panicking on its own.
pub fn endpoint() -> String {
    static CHECKED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CHECKED.get_or_init(emulator_or_exit).clone()
}

fn emulator_or_exit() -> String {
    let stop = |why: String| -> ! {
        // Straight to stderr: the test harness would swallow `eprintln!` of a test thread.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "\nthe emulator tier needs the local AWS emulator: {why}; run `bash infra/test.sh` (it \
             starts one), or `cargo test-fast` for the tests that need none"
        );
        std::process::exit(2)
    };
    let Ok(url) = std::env::var("SHEPHERD_TEST_ENDPOINT") else {
        stop("SHEPHERD_TEST_ENDPOINT is not set".into())
    };
    let reachable = url::Url::parse(&url)
        .ok()
        .and_then(|u| u.socket_addrs(|| None).ok())
        .and_then(|a| a.into_iter().next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    if !reachable {
        stop(format!("nothing answers at {url}"));
    }
    if std::env::var("AWS_ACCESS_KEY_ID").is_err() {
        stop("the local admin's keys are not set (source .local/admin.env)".into());
    }
    url
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

pub fn brief(scenes: u32) -> String {
    serde_json::json!({
        "account": "acme",
        "title": "Why the tide turns",
        "topic": "How the moon and sun move the oceans",
        "audience": "curious teenagers",
        "scenes": scenes,
        "voice": "nova"
    })
    .to_string()
}

/// The local API's callers in every test stack: `<role>-<account>`, and the stack's
/// operators (account `*`: the Cognito group's members in AWS).
pub const TOKENS: [(&str, &str, &str); 8] = [
    ("viewer-acme", "acme", "viewer"),
    ("operator-acme", "acme", "operator"),
    ("admin-acme", "acme", "admin"),
    ("operator-globex", "globex", "operator"),
    ("admin-globex", "globex", "admin"),
    ("stack-viewer", "*", "viewer"),
    ("stack-operator", "*", "operator"),
    ("stack-admin", "*", "admin"),
];

/// Runtime clients with the HTTP API on a free port and a token file for `TOKENS`.
fn clients(sdk: &aws_config::SdkConfig, stack: &str, app: &shepherd::stack::Stack) -> Clients {
    let path = std::env::temp_dir().join(format!("shepherd-{stack}-tokens.json"));
    let tokens: serde_json::Map<String, serde_json::Value> = TOKENS
        .iter()
        .map(|(t, account, role)| {
            let caller = match *account {
                "*" => serde_json::json!({"stack": true, "role": role, "name": t}),
                _ => serde_json::json!({"account": account, "role": role, "name": t}),
            };
            (t.to_string(), caller)
        })
        .collect();
    std::fs::write(&path, serde_json::json!({ "tokens": tokens }).to_string())
        .expect("token file written");
    let mut c = Clients::new(sdk);
    c.api = Some(("127.0.0.1:0".parse().unwrap(), path));
    c.stack = app.clone();
    c
}

pub struct TestStack {
    pub sdk: aws_config::SdkConfig,
    pub stack: Provisioned,
    pub provider: ProviderServer,
    /// The fallback integration's provider (`start_with_fallback`).
    pub fallback: Option<ProviderServer>,
    /// The publishing platform's MCP server (`start_with_mcp`).
    pub mcp: Option<McpServer>,
    /// A proxy every function's handler talks to AWS through (`start_with_proxy`): it
    /// fails chosen requests on the wire. Event source polling does not pass through it.
    pub proxy: Option<shepherd_local::faultproxy::FaultProxy>,
    /// The coding pipeline's source-control host (GitHub's API) and agent runner.
    pub scm: ScmServer,
    pub agent: AgentServer,
    pub ops: Ops,
    pub config: shepherd::ops::StackConfig,
    /// What the functions run: the stack's pipelines and phase code (the composition
    /// crate's, or what a test deployed).
    pub app: shepherd::stack::Stack,
    runtime: Option<LocalRuntime>,
}

impl TestStack {
    /// A fresh stack with fast retries: `RetryBaseSeconds=1`, `PhaseMaxRetries=3` unless overridden.
    pub async fn start(overrides: &[(&str, &str)]) -> Self {
        Self::new(overrides, true, false, false).await
    }

    /// A running stack with a second fake provider as the chain's fallback integration.
    pub async fn start_with_fallback(overrides: &[(&str, &str)]) -> Self {
        Self::new(overrides, true, true, false).await
    }

    /// A stack with no pollers: the test delivers messages to handlers itself.
    pub async fn start_idle() -> Self {
        Self::new(&[], false, false, false).await
    }

    /// An idle stack with parameter overrides.
    pub async fn start_idle_with(overrides: &[(&str, &str)]) -> Self {
        Self::new(overrides, false, false, false).await
    }

    /// A running stack whose publish phase publishes through the local MCP server.
    pub async fn start_with_mcp(overrides: &[(&str, &str)]) -> Self {
        Self::new(overrides, true, false, true).await
    }

    /// A running stack provisioned from another template (a variant of `template.yaml`).
    pub async fn start_from(template: &std::path::Path, overrides: &[(&str, &str)]) -> Self {
        Self::build(template, overrides, true, false, false).await
    }

    /// A running stack whose functions' handlers reach AWS through a fault proxy.
    pub async fn start_with_proxy(overrides: &[(&str, &str)]) -> Self {
        let mut t = Self::new(overrides, false, false, false).await;
        let proxy = shepherd_local::faultproxy::FaultProxy::start(&endpoint())
            .await
            .expect("proxy starts");
        let via = proxy.endpoint();
        let mut c = clients(&t.sdk, &t.stack.stack, &t.app);
        // The sweep every 2 s: what a lost hand-off leaves to it comes within a test's time.
        c.schedule_every = Some(Duration::from_secs(2));
        c.make = Arc::new(move |sdk: &aws_config::SdkConfig| {
            shepherd::wiring::AwsClients::new(&sdk.to_builder().endpoint_url(&via).build())
        });
        t.runtime = Some(
            LocalRuntime::start(&t.stack, &c)
                .await
                .expect("runtime starts"),
        );
        t.proxy = Some(proxy);
        t
    }

    async fn new(
        overrides: &[(&str, &str)],
        run: bool,
        with_fallback: bool,
        with_mcp: bool,
    ) -> Self {
        let template = repo_root().join("template.yaml");
        Self::build(&template, overrides, run, with_fallback, with_mcp).await
    }

    async fn build(
        template: &std::path::Path,
        overrides: &[(&str, &str)],
        run: bool,
        with_fallback: bool,
        with_mcp: bool,
    ) -> Self {
        let sdk = shepherd_local::sdk_config(&endpoint()).await;
        let provider = ProviderServer::start("127.0.0.1:0".parse().unwrap(), "local-provider-key")
            .await
            .expect("provider starts");
        let id = uuid::Uuid::now_v7().simple().to_string();
        let name = format!("t{}", &id[id.len() - 12..]);
        let mut params: HashMap<String, String> = [
            ("RetryBaseSeconds", "1"),
            ("RetryCapSeconds", "4"),
            ("PhaseMaxRetries", "3"),
            ("ProviderTimeoutSeconds", "3"),
            // The tests' receivers listen on loopback.
            ("AllowLoopbackWebhooks", "true"),
            // Tests start many productions per account and call the API in quick loops:
            // the limits and the throttling tests set their own.
            ("DefaultMonthlyAllowance", "0"),
            ("DefaultMaxConcurrent", "0"),
            ("ApiThrottleRate", "10000"),
            ("ApiThrottleBurst", "10000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        params.insert("ProviderBaseUrl".into(), provider.base_url());
        let scm = ScmServer::start("127.0.0.1:0".parse().unwrap())
            .await
            .expect("SCM starts");
        params.insert("ScmBaseUrl".into(), scm.base_url());
        let agent = AgentServer::start("127.0.0.1:0".parse().unwrap())
            .await
            .expect("agent runner starts");
        params.insert("AgentRunnerUrl".into(), agent.url());
        let fallback = if with_fallback {
            let f = ProviderServer::start("127.0.0.1:0".parse().unwrap(), "local-provider-key")
                .await
                .expect("fallback provider starts");
            params.insert("FallbackProviderBaseUrl".into(), f.base_url());
            Some(f)
        } else {
            None
        };
        let mcp = if with_mcp {
            let m = McpServer::start("127.0.0.1:0".parse().unwrap())
                .await
                .expect("MCP server starts");
            params.insert("PublisherMcpUrl".into(), m.url());
            Some(m)
        } else {
            None
        };
        // `{provider}` in an override stands for the fake provider's base URL.
        for (k, v) in overrides {
            params.insert(k.to_string(), v.replace("{provider}", &provider.base_url()));
        }
        let stack = provision(&sdk, template, &name, &params)
            .await
            .expect("stack provisions");
        let app = shepherd_stack::stack();
        let (ops, config) = Ops::connect(&sdk, &name)
            .await
            .expect("stack config readable");
        let runtime = match run {
            true => Some(
                LocalRuntime::start(&stack, &clients(&sdk, &name, &app))
                    .await
                    .expect("runtime starts"),
            ),
            false => None,
        };
        Self {
            sdk,
            stack,
            provider,
            fallback,
            mcp,
            proxy: None,
            scm,
            agent,
            ops,
            config,
            app,
            runtime,
        }
    }

    pub fn actor() -> Actor {
        Actor("operator:test".into())
    }

    /// The stack's own operator tools (the CLI's scope) with `role`, as `operator:test`.
    pub fn caller(role: Role) -> Caller {
        Caller::new(Self::actor(), role, Scope::Stack)
    }

    /// An operator with the whole stack in scope.
    pub fn operator() -> Caller {
        Self::caller(Role::Operator)
    }

    /// A stack admin allows `account` the `repositories` (patterns) its coding jobs name.
    pub async fn allow(&self, account: &str, repositories: &[&str]) {
        let access = shepherd::domain::access::AccountAccess {
            repositories: repositories.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        };
        self.ops
            .set_account_access(account, access, &Self::caller(Role::Admin))
            .await
            .expect("access set");
    }

    /// Every alarm, as the stack's operators see them (the first 1,000).
    pub async fn alarms(&self) -> Vec<shepherd::domain::alarms::Alarm> {
        self.ops
            .alarms(None, 1000, None, &Self::operator())
            .await
            .expect("alarms readable")
            .items
    }

    pub async fn start_production(&self, scenes: u32) -> Production {
        self.ops
            .start(&brief(scenes), &Self::operator())
            .await
            .expect("production starts")
    }

    /// Kills the phase's next invocation `after` it starts, as a dying Lambda sandbox would.
    pub fn crash_next(&self, phase: &str, after: Duration) {
        self.runtime
            .as_ref()
            .expect("running")
            .crash_next(phase, after);
    }

    /// How many image calls the provider received for each of scenes 1..=n.
    pub fn image_calls(&self, n: u32) -> Vec<u64> {
        let calls = self.provider.calls();
        (1..=n)
            .map(|scene| {
                calls
                    .by_key
                    .iter()
                    .filter(|(k, _)| k.ends_with(&format!("#assets#scene-{scene}")))
                    .map(|(_, n)| *n)
                    .sum()
            })
            .collect()
    }

    pub fn stats(&self, phase: &str) -> Arc<Stats> {
        self.runtime.as_ref().expect("running").stats[phase].clone()
    }

    /// The template's function running `handler` (a phase's name, `sweeper`, ...; `api`:
    /// the API function).
    pub fn function(&self, handler: &str) -> &shepherd_local::provision::LocalFunction {
        self.stack
            .functions
            .iter()
            .find(|f| f.handler == handler || (f.handler.is_empty() && f.binary == handler))
            .unwrap_or_else(|| panic!("no function runs {handler} in the template"))
    }

    /// `GET /events?source=<source>` as the account's viewer: the events, newest first.
    pub async fn events_of(&self, source: &str, account: &str) -> Vec<serde_json::Value> {
        let viewer = format!("viewer-{account}");
        let path = format!("/events?source={source}");
        let (status, page) = self.http("GET", &path, Some(&viewer), None).await;
        assert_eq!(status, 200, "{page}");
        page["events"].as_array().cloned().unwrap_or_default()
    }

    /// `POST /watchers` as `acme`'s admin: the new watcher's id.
    pub async fn create_watcher(&self, spec: serde_json::Value) -> String {
        let (status, w) = self
            .http("POST", "/watchers", Some("admin-acme"), Some(spec))
            .await;
        assert_eq!(status, 201, "{w}");
        w["id"].as_str().expect("an id").to_string()
    }

    /// The scheduler's operations with its role (IAM enforced), polling through the
    /// local stack's fetcher, on a clock the test moves (slots and polls come due without
    /// waiting).
    pub async fn scheduler_ops(&self) -> (Ops, Arc<MovedClock>) {
        let clients = self.function_clients("scheduler").await;
        let mut ports = clients.ports(&self.config.topology, None, Duration::from_secs(10));
        let clock = Arc::new(MovedClock::default());
        ports.clock = clock.clone();
        ports.fetch = shepherd::wiring::fetcher(true);
        (
            Ops::new(ports, self.config.clone(), self.app.pipelines().clone())
                .with_watch_code(self.app.watch_code()),
            clock,
        )
    }

    /// SDK clients acting as the role of the function running `handler`.
    pub async fn function_clients(&self, handler: &str) -> shepherd::wiring::AwsClients {
        let role = &self.function(handler).role_arn;
        shepherd::wiring::AwsClients::new(&shepherd_local::role_sdk_config(&self.sdk, role).await)
    }

    /// The handler of a phase, built from the template as the local runtime builds it, with
    /// the function's role.
    pub async fn handler(&self, phase: &str) -> shepherd::runtime::PhaseFunction {
        let clients = self.function_clients(phase).await;
        shepherd_local::runtime::phase_runtime(self.function(phase), &clients, &self.app)
            .expect("handler builds")
    }

    /// The sweeper, built from the template as the local runtime builds it, with its role.
    pub async fn sweeper(&self) -> shepherd::recovery::Sweeper {
        let clients = self.function_clients("sweeper").await;
        shepherd_local::runtime::sweeper(self.function("sweeper"), &clients, &self.app)
            .expect("sweeper builds")
    }

    /// Starts the functions of an idle stack.
    pub async fn run(&mut self) {
        assert!(self.runtime.is_none(), "already running");
        let clients = clients(&self.sdk, &self.stack.stack, &self.app);
        self.runtime = Some(
            LocalRuntime::start(&self.stack, &clients)
                .await
                .expect("runtime starts"),
        );
    }

    /// Deletes every message in a queue (a lost message, for tests).
    pub async fn drain(&self, logical: &str) {
        let url = self.queue_url(logical);
        for m in self.peek(logical).await {
            self.sqs()
                .delete_message()
                .queue_url(&url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }

    /// Receives up to ten messages from a queue (with all attributes), leaving them there.
    pub async fn peek(&self, logical: &str) -> Vec<aws_sdk_sqs::types::Message> {
        self.sqs()
            .receive_message()
            .queue_url(self.queue_url(logical))
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .expect("receive")
            .messages
            .unwrap_or_default()
    }

    /// Waits until a queue holds exactly `n` messages.
    pub async fn wait_depth(&self, logical: &str, n: u64, timeout: Duration) {
        let start = Instant::now();
        loop {
            let d = self.depth(logical).await;
            if d == n {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "{logical} holds {d} messages, expected {n}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn queue_url(&self, logical: &str) -> String {
        self.stack
            .reference(logical)
            .expect("queue provisioned")
            .to_string()
    }

    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk)
    }

    /// S3 as the admin (path-style, as against any emulator).
    pub fn s3(&self) -> aws_sdk_s3::Client {
        shepherd::wiring::AwsClients::new(&self.sdk).s3
    }

    /// Polls until `done` holds for the production, or panics with its state after `timeout`.
    pub async fn wait_for(
        &self,
        id: &str,
        timeout: Duration,
        done: impl Fn(&Production) -> bool,
    ) -> Production {
        let start = Instant::now();
        loop {
            let p = self
                .ops
                .get(id, &Self::operator())
                .await
                .expect("production readable");
            if done(&p) {
                return p;
            }
            if start.elapsed() > timeout {
                panic!("timed out after {timeout:?}; production is {p:#?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A production's audit trail once `done` holds for it (the projector is asynchronous).
    pub async fn audit_until(
        &self,
        id: &str,
        done: impl Fn(&[shepherd::audit::AuditRecord]) -> bool,
    ) -> Vec<shepherd::audit::AuditRecord> {
        let q = shepherd::audit::AuditQuery::Production(id.into());
        let start = Instant::now();
        loop {
            let rows = self
                .ops
                .audit(&q, 1000, None, &Self::operator())
                .await
                .expect("audit readable")
                .items;
            if done(&rows) || start.elapsed() > Duration::from_secs(60) {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A production's audit trail once an event of `event_type` is in it.
    pub async fn audit_with(
        &self,
        id: &str,
        event_type: &str,
    ) -> Vec<shepherd::audit::AuditRecord> {
        self.audit_until(id, |rows| rows.iter().any(|r| r.event_type == event_type))
            .await
    }

    pub async fn wait_settled(&self, id: &str, timeout: Duration) -> Production {
        self.wait_for(id, timeout, |p| p.status.is_settled()).await
    }

    /// Waits until `id` settles, which must be as completed (the production otherwise).
    pub async fn completes(&self, id: &str, timeout: Duration) -> Production {
        let done = self.wait_settled(id, timeout).await;
        assert_eq!(
            done.status,
            shepherd::domain::ProductionStatus::Completed,
            "{done:#?}"
        );
        done
    }

    /// `POST /productions/{id}/actions/{action}` as the caller `token` names: the status
    /// and the JSON answered.
    pub async fn action_http(
        &self,
        id: &str,
        action: &str,
        token: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let path = format!("/productions/{id}/actions/{action}");
        self.http("POST", &path, Some(token), Some(body)).await
    }

    /// An action as a stack caller of `role`, which must be taken.
    pub async fn act(&self, id: &str, act: shepherd::domain::Act, role: Role) -> Production {
        let what = act.action();
        self.ops
            .act(id, act, &Self::caller(role))
            .await
            .unwrap_or_else(|e| panic!("{what} on {id}: {e}"))
    }

    /// Messages currently in a queue (visible or not), from its attributes.
    pub async fn depth(&self, logical: &str) -> u64 {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let out = self
            .sqs()
            .get_queue_attributes()
            .queue_url(self.queue_url(logical))
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("queue attributes");
        let attrs = out.attributes.unwrap_or_default();
        [
            A::ApproximateNumberOfMessages,
            A::ApproximateNumberOfMessagesNotVisible,
        ]
        .iter()
        .map(|a| {
            attrs
                .get(a)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
    }

    /// Where the local HTTP API listens (`http://127.0.0.1:<port>`).
    pub fn api_url(&self) -> String {
        let addr = self
            .runtime
            .as_ref()
            .and_then(|r| r.api_addr)
            .expect("the API runs with the stack");
        format!("http://{addr}")
    }

    /// One HTTP API call as `token` (see `TOKENS`): the status and the JSON body.
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let addr = self
            .runtime
            .as_ref()
            .and_then(|r| r.api_addr)
            .expect("the API runs with the stack");
        let mut req = reqwest::Client::new().request(
            method.parse().expect("method"),
            format!("http://{addr}{path}"),
        );
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("API answers");
        let status = res.status().as_u16();
        let text = res.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("{method} {path} answered {status} with non-JSON {text:?}: {e}")
        });
        (status, json)
    }

    /// A running stack provisioned from `template` whose functions run `app` (the stack's
    /// pipelines with a team's added, say).
    pub async fn start_with_stack(template: &std::path::Path, app: shepherd::stack::Stack) -> Self {
        let mut t = Self::build(template, &[], false, false, false).await;
        t.app = app;
        t.ops = t.ops.with_pipelines(t.app.pipelines().clone());
        t.run().await;
        t
    }

    /// A running stack whose pipelines are the stack's with `extra` added (a team's
    /// crates), provisioned from the template generated for them (their queues, functions,
    /// roles and alarms), as `cargo run -p shepherd-local -- template` writes it.
    pub async fn start_with_pipelines(extra: Vec<shepherd::stack::PipelineSpec>) -> Self {
        let app = extra
            .into_iter()
            .fold(shepherd_stack::pipelines(), |b, spec| b.pipeline(spec))
            .build()
            .expect("the stack with the extra pipelines builds");
        let template =
            std::fs::read_to_string(repo_root().join("template.yaml")).expect("template.yaml");
        let generated = shepherd_local::generate::apply(&template, app.pipelines())
            .expect("the template generates");
        let path =
            std::env::temp_dir().join(format!("shepherd-stack-{}.yaml", uuid::Uuid::now_v7()));
        std::fs::write(&path, generated).expect("a temporary template");
        Self::start_with_stack(&path, app).await
    }

    /// Subscribes `rx` to `events` as `caller` and makes it trust the new secret: the
    /// subscription's id.
    pub async fn subscribe(
        &self,
        rx: &receiver::Receiver,
        events: &[&str],
        caller: &Caller,
    ) -> String {
        let events: Vec<String> = events.iter().map(|e| e.to_string()).collect();
        let created = self
            .ops
            .create_webhook(None, &rx.url, &events, "test receiver", caller)
            .await
            .expect("subscription created");
        assert!(created.secret.starts_with("whsec_"));
        rx.trust(&[&created.secret]);
        created.subscription.id
    }

    /// An SQS queue subscribed to the stack's notification topic (with the queue policy AWS
    /// requires for SNS to send to it), standing in for an e-mail inbox.
    pub async fn inbox(&self) -> String {
        let t = self;
        let sqs = t.sqs();
        let name = format!("{}-inbox", t.stack.stack);
        let url = sqs
            .create_queue()
            .queue_name(&name)
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
            .clone();
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": t.config.notify_topic}}
            }]
        });
        sqs.set_queue_attributes()
            .queue_url(&url)
            .attributes(
                aws_sdk_sqs::types::QueueAttributeName::Policy,
                policy.to_string(),
            )
            .send()
            .await
            .unwrap();
        aws_sdk_sns::Client::new(&t.sdk)
            .subscribe()
            .topic_arn(&t.config.notify_topic)
            .protocol("sqs")
            .endpoint(&arn)
            .send()
            .await
            .unwrap();
        url
    }

    /// The notices an inbox got within `timeout`, once there are `n`.
    pub async fn notices(&self, url: &str, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let t = self;
        let until = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n && Instant::now() < until {
            let got = t
                .sqs()
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .unwrap();
            for m in got.messages.unwrap_or_default() {
                out.push(serde_json::from_str(m.body.as_deref().unwrap()).unwrap());
            }
        }
        out
    }

    /// What a deploy of other pipeline definitions does: the functions (and this stack's
    /// `ops`) restart on `pipelines`; what is in the tables and queues stays.
    pub async fn deploy(&mut self, pipelines: Arc<shepherd::pipeline::Pipelines>) {
        if let Some(r) = self.runtime.take() {
            r.stop().await;
            // A long poll the old pollers dropped is still open on the emulator for up to
            // its 1 s wait: a message sent now would be received by nobody and stay
            // invisible for the queue's visibility timeout. Let those polls end first.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        self.app = self
            .app
            .with_pipelines(pipelines.clone())
            .expect("the deployed definitions' phases have code");
        let c = clients(&self.sdk, &self.stack.stack, &self.app);
        self.runtime = Some(
            LocalRuntime::start(&self.stack, &c)
                .await
                .expect("runtime starts"),
        );
        let (ops, _) = Ops::connect(&self.sdk, &self.stack.stack)
            .await
            .expect("stack config readable");
        // The deploy's definitions (the template as provisioned publishes the stack's own).
        self.ops = ops.with_pipelines(pipelines);
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.runtime.take() {
            r.stop().await;
        }
    }
}

/// The wall clock moved by an offset the test sets.
#[derive(Default)]
pub struct MovedClock(pub std::sync::atomic::AtomicI64);

impl MovedClock {
    /// Moves the clock on by `ms`.
    pub fn advance(&self, ms: shepherd::domain::Millis) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl shepherd::ports::Clock for MovedClock {
    fn now(&self) -> shepherd::domain::Millis {
        shepherd::ports::SystemClock.now() + self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}
