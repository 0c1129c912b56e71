//! Operator operations, shared by the CLI (and later the HTTP API): start, show, list.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::adapters::{DynamoStore, SqsQueue};
use crate::domain::{
    Brief, BriefError, Command, DomainError, GatePolicy, OnExpiry, OverrideTarget, Production,
    Transition, decide, start,
};
use crate::phases::{CONTENT_PIPELINE, CONTENT_PIPELINE_NAME};
use crate::ports::{
    Actor, Clock, CommitOutcome, OutMessage, Queue, Store, StoreError, SystemClock,
};
use crate::runtime::PhaseMessage;

/// Where a deployed (or local) stack keeps its resources. The template writes it to the SSM
/// parameter `/shepherd/<stack>/config`, so the CLI needs only the stack name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StackConfig {
    pub state_table: String,
    pub idempotency_table: String,
    pub audit_table: String,
    /// `phase=url,...`
    pub queues: String,
    pub dlqs: String,
    /// Phases after which productions wait for approval (`a,b`); empty: none.
    #[serde(default)]
    pub approval_phases: String,
    #[serde(default = "default_approval_ttl")]
    pub approval_ttl_secs: u64,
    /// `fail` or `renew`.
    #[serde(default = "default_on_expiry")]
    pub approval_on_expiry: String,
    /// The SSM parameter holding the integration registry.
    #[serde(default)]
    pub integrations_param: String,
    /// Accounts without limits of their own get these (0: unlimited).
    #[serde(default)]
    pub default_monthly_allowance: u32,
    #[serde(default)]
    pub default_max_concurrent: u32,
}

fn default_approval_ttl() -> u64 {
    86_400
}
fn default_on_expiry() -> String {
    "fail".into()
}

impl StackConfig {
    pub fn parameter_name(stack: &str) -> String {
        format!("/shepherd/{stack}/config")
    }

    /// The gate policy new productions get; `auto_approve` comes from the brief.
    pub fn gate_policy(&self, auto_approve: bool) -> Result<GatePolicy, OpsError> {
        let phases: Vec<String> = self
            .approval_phases
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect();
        for p in &phases {
            if !CONTENT_PIPELINE.contains(&p.as_str()) {
                return Err(OpsError::Config(format!(
                    "approval phase {p:?} is not a phase of the pipeline"
                )));
            }
        }
        let on_expiry = match self.approval_on_expiry.as_str() {
            "fail" => OnExpiry::Fail,
            "renew" => OnExpiry::Renew,
            other => {
                return Err(OpsError::Config(format!(
                    "approval_on_expiry {other:?}: expected fail or renew"
                )));
            }
        };
        Ok(GatePolicy {
            phases,
            // The content pipeline publishes last: nothing is published with open warnings.
            acknowledge_before: Some("publish".into()),
            auto_approve,
            ttl: self.approval_ttl_secs.max(1) as i64 * 1000,
            on_expiry,
        })
    }

    /// The limits of accounts that have none of their own.
    pub fn default_limits(&self) -> crate::limits::Limits {
        let some = |n: u32| (n > 0).then_some(n);
        crate::limits::Limits {
            monthly_allowance: some(self.default_monthly_allowance),
            max_concurrent: some(self.default_max_concurrent),
        }
    }

    pub fn queue_map(&self) -> BTreeMap<String, String> {
        self.queues
            .split(',')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim().into(), v.trim().into()))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    InvalidBrief(#[from] BriefError),
    #[error("production {0} not found")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "production {id} was created but its first message could not be sent ({reason}); \
         the recovery sweep will dispatch it"
    )]
    DispatchFailed { id: String, reason: String },
    #[error("stack configuration: {0}")]
    Config(String),
    /// The action is not among the production's available actions (HTTP 409).
    #[error("{action} is not available while the production is {status} (available: {available})")]
    Conflict {
        action: String,
        status: String,
        available: String,
    },
    /// The caller's role may not do this (HTTP 403).
    #[error("{0}")]
    Forbidden(String),
    /// The request itself is wrong (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// An account limit refused it (HTTP 429); the text names the limit and the figures.
    #[error("{0}")]
    LimitReached(String),
}

impl OpsError {
    /// The HTTP status an API answers with.
    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidBrief(_) | Self::Invalid(_) => 400,
            Self::Forbidden(_) => 403,
            Self::NotFound(_) => 404,
            Self::Conflict { .. } => 409,
            Self::LimitReached(_) => 429,
            Self::DispatchFailed { .. } | Self::Store(_) | Self::Config(_) => 503,
        }
    }
}

/// Who may do what: viewers read; operators act; admins also override (and, later,
/// discard DLQ messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

/// An operator's action on a production.
#[derive(Debug, Clone, PartialEq)]
pub enum OperatorAction {
    Pause,
    Resume,
    RetryPhase,
    Approve,
    Reject {
        feedback: String,
    },
    Cancel,
    /// Change brief fields (see `Brief::EDITABLE`); retry or resume afterwards.
    Edit {
        changes: Vec<(String, String)>,
    },
    Override {
        reason: String,
        target: OverrideTarget,
    },
    /// The production's warnings were read; the held phase (publish) may start.
    AcknowledgeWarnings,
}

impl OperatorAction {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::RetryPhase => "retry_phase",
            Self::Approve => "approve",
            Self::Reject { .. } => "reject",
            Self::Cancel => "cancel",
            Self::Edit { .. } => "edit",
            Self::Override { .. } => "override",
            Self::AcknowledgeWarnings => "acknowledge_warnings",
        }
    }

    fn required_role(&self) -> Role {
        match self {
            Self::Override { .. } => Role::Admin,
            _ => Role::Operator,
        }
    }
}

pub struct Ops {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) queue: Arc<dyn Queue>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) stack: StackConfig,
    pub(crate) queues: BTreeMap<String, String>,
    /// Where audit rows that belong to no production go (DLQ discards).
    pub(crate) audit: Option<(aws_sdk_dynamodb::Client, String)>,
    /// Reads the integration registry and, for `integrations test`, secrets.
    pub(crate) params: Option<Arc<dyn crate::ports::Params>>,
}

impl Ops {
    pub fn new(
        store: Arc<dyn Store>,
        queue: Arc<dyn Queue>,
        clock: Arc<dyn Clock>,
        stack: StackConfig,
    ) -> Self {
        let queues = stack.queue_map();
        Self {
            store,
            queue,
            clock,
            stack,
            queues,
            audit: None,
            params: None,
        }
    }

    /// Lets operations that change no production (DLQ discards) write their audit rows.
    pub fn with_audit(
        mut self,
        client: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
    ) -> Self {
        self.audit = Some((client, table.into()));
        self
    }

    /// Reads the stack's configuration from SSM and builds the AWS adapters.
    pub async fn connect(
        sdk: &aws_config::SdkConfig,
        stack: &str,
    ) -> Result<(Self, StackConfig), OpsError> {
        Self::connect_parameter(sdk, &StackConfig::parameter_name(stack)).await
    }

    /// As `connect`, from the configuration parameter's name (what the API function gets).
    pub async fn connect_parameter(
        sdk: &aws_config::SdkConfig,
        name: &str,
    ) -> Result<(Self, StackConfig), OpsError> {
        let stack = name
            .strip_prefix("/shepherd/")
            .and_then(|s| s.strip_suffix("/config"))
            .unwrap_or(name);
        let ssm = aws_sdk_ssm::Client::new(sdk);
        let value = ssm
            .get_parameter()
            .name(name)
            .send()
            .await
            .map_err(|e| {
                OpsError::Config(format!(
                    "could not read {name} (is the stack {stack:?} deployed or the local stack up?): {}",
                    crate::adapters::sdk_error(&e)
                ))
            })?
            .parameter
            .and_then(|p| p.value)
            .unwrap_or_default();
        let config: StackConfig = serde_json::from_str(&value)
            .map_err(|e| OpsError::Config(format!("{name} is not a stack configuration: {e}")))?;
        let ops = Self::new(
            Arc::new(DynamoStore::new(
                aws_sdk_dynamodb::Client::new(sdk),
                &config.state_table,
            )),
            Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(sdk))),
            Arc::new(SystemClock),
            config.clone(),
        )
        .with_audit(aws_sdk_dynamodb::Client::new(sdk), &config.audit_table);
        let ops = Self {
            params: Some(Arc::new(crate::adapters::SsmParams::new(ssm))),
            ..ops
        };
        Ok((ops, config))
    }

    /// Validates the brief, creates the production and sends its first phase's message.
    pub async fn start(&self, brief_json: &str, actor: &Actor) -> Result<Production, OpsError> {
        let brief = Brief::parse(brief_json)?;
        let id = uuid::Uuid::now_v7().to_string();
        let trace = uuid::Uuid::now_v7().simple().to_string();
        let gates = self.stack.gate_policy(brief.auto_approve)?;
        let t = start(
            id.clone(),
            brief.account.clone(),
            CONTENT_PIPELINE_NAME.into(),
            &CONTENT_PIPELINE,
            gates,
            trace,
            self.clock.now(),
        );
        let reservation = crate::limits::Reservation {
            account: brief.account.clone(),
            month: crate::limits::month_of(self.clock.now()),
            defaults: self.stack.default_limits(),
        };
        // A read first, for the common refusal: nothing is attempted. The transaction's
        // condition below is what makes the reservation atomic (two racing starts).
        let usage = self.account_usage(&brief.account).await?;
        if usage.is_full() {
            return Err(OpsError::LimitReached(usage.refusal()));
        }
        match self.store.create(&t, &brief, actor, &reservation).await {
            Ok(()) => {}
            Err(StoreError::LimitReached) => {
                let usage = self.account_usage(&brief.account).await?;
                return Err(OpsError::LimitReached(usage.refusal()));
            }
            Err(e) => return Err(e.into()),
        }
        self.dispatch(&t).await?;
        Ok(t.production)
    }

    /// An account's limits and what it uses of them this month.
    pub async fn account_usage(
        &self,
        account: &str,
    ) -> Result<crate::limits::AccountUsage, OpsError> {
        let month = crate::limits::month_of(self.clock.now());
        Ok(self
            .store
            .account(account, &month, self.stack.default_limits())
            .await?)
    }

    /// Sets an account's own limits (admin); `None` falls back to the stack's default.
    pub async fn set_limits(
        &self,
        account: &str,
        limits: crate::limits::Limits,
        role: Role,
    ) -> Result<crate::limits::AccountUsage, OpsError> {
        if role < Role::Admin {
            return Err(OpsError::Forbidden(
                "setting an account's limits needs the Admin role".into(),
            ));
        }
        if limits.monthly_allowance == Some(0) || limits.max_concurrent == Some(0) {
            return Err(OpsError::Invalid(
                "a limit is at least 1 (use none for unlimited; cancel productions to stop an account)"
                    .into(),
            ));
        }
        self.store.set_limits(account, limits).await?;
        self.account_usage(account).await
    }

    /// Carries out an operator's action: refused with 409 unless available, 403 unless the
    /// role allows it; otherwise committed (with its audit event) and dispatched.
    pub async fn act(
        &self,
        id: &str,
        action: OperatorAction,
        actor: &Actor,
        role: Role,
    ) -> Result<Production, OpsError> {
        self.act_in(id, action, actor, role, None).await
    }

    /// `act` for a caller scoped to `account` (the API): another account's production is
    /// not found.
    pub async fn act_in(
        &self,
        id: &str,
        action: OperatorAction,
        actor: &Actor,
        role: Role,
        account: Option<&str>,
    ) -> Result<Production, OpsError> {
        for _ in 0..5 {
            // Scoped read first: another account's production is unknown whatever the role.
            let p = self.get_in(id, account).await?;
            if role < action.required_role() {
                return Err(OpsError::Forbidden(format!(
                    "{} needs the {:?} role; you are {:?}",
                    action.name(),
                    action.required_role(),
                    role
                )));
            }
            let (cmd, brief) = match &action {
                OperatorAction::Pause => (Command::Pause, None),
                OperatorAction::Resume => (Command::Resume, None),
                OperatorAction::RetryPhase => (Command::RetryPhase, None),
                OperatorAction::Approve => (Command::Approve, None),
                OperatorAction::Reject { feedback } => (
                    Command::Reject {
                        feedback: feedback.clone(),
                    },
                    None,
                ),
                OperatorAction::Cancel => (Command::Cancel, None),
                OperatorAction::AcknowledgeWarnings => (Command::AcknowledgeWarnings, None),
                OperatorAction::Override { reason, target } => (
                    Command::Override {
                        reason: reason.clone(),
                        target: target.clone(),
                    },
                    None,
                ),
                OperatorAction::Edit { changes } => {
                    let current = self
                        .store
                        .get_brief(id)
                        .await?
                        .ok_or_else(|| OpsError::NotFound(format!("brief of {id}")))?;
                    let edited = current.edited(changes)?;
                    let fields = changes.iter().map(|(k, _)| k.clone()).collect();
                    (Command::Edit { fields }, Some(edited))
                }
            };
            let t = decide(&p, cmd, self.clock.now()).map_err(|e| match e {
                DomainError::ActionUnavailable(action, status) => OpsError::Conflict {
                    action: action.into(),
                    status: status.into(),
                    available: available(&p),
                },
                other => OpsError::Invalid(other.to_string()),
            })?;
            let outcome = match &brief {
                Some(b) => self.store.commit_with_brief(&t, b, actor).await?,
                None => self.store.commit(&t, actor).await?,
            };
            match outcome {
                CommitOutcome::Committed => {
                    self.dispatch(&t).await?;
                    return Ok(t.production);
                }
                // Someone else changed it first: decide again on the newer state.
                CommitOutcome::Conflict(_) => continue,
            }
        }
        Err(OpsError::Store(StoreError::Unavailable(format!(
            "production {id} kept changing; try again"
        ))))
    }

    /// Sends the transition's dispatch, if any.
    async fn dispatch(&self, t: &Transition) -> Result<(), OpsError> {
        let Some(d) = &t.dispatch else { return Ok(()) };
        let id = &t.production.id;
        let url = self
            .queues
            .get(&d.phase)
            .ok_or_else(|| OpsError::DispatchFailed {
                id: id.clone(),
                reason: format!("no queue for phase {}", d.phase),
            })?;
        let msg = OutMessage {
            id: "op".into(),
            body: PhaseMessage::new(id, &d.phase, d.attempt).to_body(),
            attributes: vec![],
        };
        match self.queue.send_batch(url, std::slice::from_ref(&msg)).await {
            Ok(failed) if failed.is_empty() => Ok(()),
            Ok(_) => Err(OpsError::DispatchFailed {
                id: id.clone(),
                reason: "SQS refused the message".into(),
            }),
            Err(e) => Err(OpsError::DispatchFailed {
                id: id.clone(),
                reason: e.to_string(),
            }),
        }
    }

    /// Every stored alarm, newest first.
    pub async fn alarms(&self) -> Result<Vec<crate::alarms::Alarm>, OpsError> {
        Ok(self.store.alarms().await?)
    }

    /// The alarms one account may see: those about its own productions; alarms about
    /// no production (a queue, the stack) only for admins.
    pub async fn alarms_for(
        &self,
        account: &str,
        role: Role,
    ) -> Result<Vec<crate::alarms::Alarm>, OpsError> {
        let mut out = Vec::new();
        for a in self.alarms().await? {
            if self.alarm_visible(&a.subject, account, role).await? {
                out.push(a);
            }
        }
        Ok(out)
    }

    async fn alarm_visible(
        &self,
        subject: &str,
        account: &str,
        role: Role,
    ) -> Result<bool, OpsError> {
        Ok(match self.store.get(subject).await? {
            Some(p) => p.account == account,
            None => role == Role::Admin,
        })
    }

    /// `set_alarm` for an API caller: an alarm the account may not see is not found.
    pub async fn set_alarm_in(
        &self,
        id: &str,
        status: crate::alarms::AlarmStatus,
        actor: &Actor,
        role: Role,
        account: &str,
    ) -> Result<(), OpsError> {
        let subject = id.split_once('#').map(|(_, s)| s).unwrap_or_default();
        if !self.alarm_visible(subject, account, role).await? {
            return Err(OpsError::NotFound(format!("alarm {id}")));
        }
        self.set_alarm(id, status, actor, role).await
    }

    /// Acknowledges or resolves an alarm (`<type>#<subject>`).
    pub async fn set_alarm(
        &self,
        id: &str,
        status: crate::alarms::AlarmStatus,
        actor: &Actor,
        role: Role,
    ) -> Result<(), OpsError> {
        if role < Role::Operator {
            return Err(OpsError::Forbidden(
                "handling alarms needs the Operator role".into(),
            ));
        }
        if self
            .store
            .set_alarm_status(id, status, actor, self.clock.now())
            .await?
        {
            Ok(())
        } else {
            Err(OpsError::NotFound(format!("alarm {id}")))
        }
    }

    /// One cheap read of the state table: is the store reachable?
    pub async fn probe(&self) -> Result<(), OpsError> {
        self.store.get("health-probe").await?;
        Ok(())
    }

    pub async fn get(&self, id: &str) -> Result<Production, OpsError> {
        self.store
            .get(id)
            .await?
            .ok_or_else(|| OpsError::NotFound(id.into()))
    }

    /// The production with every succeeded phase's output.
    pub async fn outputs(
        &self,
        p: &Production,
    ) -> Result<BTreeMap<String, serde_json::Value>, OpsError> {
        let mut out = BTreeMap::new();
        for ph in &p.phases {
            if let Some(key) = &ph.output
                && let Some(v) = self.store.get_output(&p.id, key).await?
            {
                out.insert(ph.name.clone(), v);
            }
        }
        Ok(out)
    }

    /// Audit events, oldest first. With `account`, only that account's events (a
    /// production of another account is unknown: 404).
    pub async fn audit(
        &self,
        q: &crate::audit::AuditQuery,
        limit: usize,
        account: Option<&str>,
    ) -> Result<Vec<crate::audit::AuditRecord>, OpsError> {
        if let (crate::audit::AuditQuery::Production(id), Some(_)) = (q, account) {
            self.get_in(id, account).await?;
        }
        let Some((client, table)) = &self.audit else {
            return Err(OpsError::Config("no audit table configured".into()));
        };
        let rows = crate::audit::query(client, table, q, limit)
            .await
            .map_err(|e| OpsError::Store(StoreError::Unavailable(e.to_string())))?;
        Ok(match account {
            None => rows,
            Some(a) => rows
                .into_iter()
                .filter(|r| r.account.as_deref() == Some(a))
                .collect(),
        })
    }

    /// A production, as seen from `account` (`None`: every account). Another account's
    /// production is reported as not found, so ids cannot be probed.
    pub async fn get_in(&self, id: &str, account: Option<&str>) -> Result<Production, OpsError> {
        let p = self.get(id).await?;
        match account {
            Some(a) if a != p.account => Err(OpsError::NotFound(id.into())),
            _ => Ok(p),
        }
    }

    /// Newest first; `status` keeps only productions in that status.
    pub async fn list(
        &self,
        account: &str,
        status: Option<crate::domain::ProductionStatus>,
        limit: usize,
    ) -> Result<Vec<Production>, OpsError> {
        Ok(self.store.list(account, status, limit).await?)
    }
}

fn available(p: &Production) -> String {
    let a: Vec<&str> = p.available_actions().iter().map(|a| a.as_str()).collect();
    if a.is_empty() {
        "none".into()
    } else {
        a.join(", ")
    }
}
