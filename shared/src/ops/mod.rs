//! What operators do, for the CLI and the HTTP API alike. Every entry takes a [`Caller`]:
//! `domain::authz` decides what it may do and see; another account's things are "not
//! found". Production changes go through the one write path (`write`).
//!
//! | file | operations |
//! |---|---|
//! | `mod.rs` | start, get, list, outputs, act, account usage and limits, probe |
//! | `dlq.rs` | list, show, redrive (one or many), discard |
//! | `alarms.rs` | list, acknowledge, resolve |
//! | `integrations.rs` | list with health, enable, disable, test |
//! | `audit.rs` | audit queries |
//! | `events.rs` | the intake path; connectors (create, list, show, remove), inbound webhooks, events (list, show, resubmit) |
//! | `watchers.rs` | watchers (create, list, show, enable, disable, remove) and their polls |
//! | `schedules.rs` | schedules (create, list, show, pause, resume, trigger, backfill, remove) and the scheduler's tick |
//! | `webhooks.rs` | subscriptions (create, list, enable, disable, rotate, delete, test), deliveries (list, show, resend, replay) |

mod alarms;
mod audit;
mod callbacks;
mod dlq;
mod events;
mod integrations;
mod pipelines;
pub mod requests;
mod schedules;
mod watchers;
mod webhooks;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use audit::AuditRedrive;
pub use callbacks::{CallbackAnswer, JobReport, ReportedError};
pub use dlq::{DlqEntry, RedriveFilter, RedriveReport};
pub use events::{CreatedConnector, EventFilter};
pub use integrations::{IntegrationTest, IntegrationView};
pub use pipelines::{PhaseInfo, PipelineVersionInfo};
pub use schedules::{DUE_PER_TICK, ScheduleDetail, ScheduleTick};
pub use watchers::WatchTick;
pub use webhooks::{CreatedSubscription, MAX_REPLAY, Replayed};

pub use crate::config::StackConfig;
use crate::domain::artifacts::Artifact;
use crate::domain::authz::{Denied, Permission};
use crate::domain::input;
use crate::domain::limits::{AccountUsage, Limits, Reservation, month_of};
use crate::domain::{
    Act, Action, Caller, DomainError, Millis, PipelineVersion, Production, ProductionStatus, start,
};
use crate::pipeline::{InputError, Pipelines};
use crate::ports::{Page, Ports, StartKey, StoreError, UsedStartKey};
use crate::write::{Dispatcher, OnConflict, Transitioner, Written};

/// One phase's output as [`Ops::output`] reads it.
#[derive(Debug, Clone)]
pub struct PhaseOutput {
    /// The output, unless it is given by `link`.
    pub body: Option<serde_json::Value>,
    /// Its JSON's length.
    pub bytes: usize,
    /// A download link to the artifact bucket, for an output longer than asked for whole.
    pub link: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    InvalidInput(#[from] InputError),
    #[error("production {0} not found")]
    NotFound(String),
    #[error(transparent)]
    Store(StoreError),
    #[error(
        "production {id} was created but its first message could not be sent ({reason}); \
         the recovery sweep will dispatch it"
    )]
    DispatchFailed { id: String, reason: String },
    #[error("stack configuration: {0}")]
    Config(String),
    /// The action is not among the production's available actions.
    #[error("{action} is not available while the production is {} (available: {})", status.as_str(), crate::domain::names(available))]
    Conflict {
        action: Action,
        status: ProductionStatus,
        available: Vec<Action>,
    },
    /// A start's idempotency key was used, within its 24 hours, for another input.
    #[error(
        "idempotency key {key:?} was used for another input by production {production}; \
         use a new key for a new production"
    )]
    KeyReused { key: String, production: String },
    /// The caller's role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The request itself is wrong.
    #[error("{0}")]
    Invalid(String),
    /// An account limit refused it; the text names the limit and the figures.
    #[error("{0}")]
    LimitReached(String),
    /// Not possible in the thing's present state (a delivery already pending, ...).
    #[error("{0}")]
    Busy(String),
    /// A sender's signature does not verify (an inbound webhook): nothing is stored.
    #[error("{0}")]
    Unauthorized(String),
    /// Something of a production it does not have (the text names it).
    #[error("{0}")]
    Missing(String),
    /// What is asked for is over for good (an external job's attempt that no longer waits).
    #[error("{0}")]
    Gone(String),
}

impl From<StoreError> for OpsError {
    fn from(e: StoreError) -> Self {
        match e {
            // A cursor comes from the request: a bad one is the caller's mistake.
            StoreError::BadCursor(_) => Self::Invalid(e.to_string()),
            other => Self::Store(other),
        }
    }
}

impl From<Denied> for OpsError {
    fn from(d: Denied) -> Self {
        Self::Forbidden(d.to_string())
    }
}

impl From<DomainError> for OpsError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::ActionUnavailable {
                action,
                status,
                available,
            } => Self::Conflict {
                action,
                status,
                available,
            },
            other => Self::Invalid(other.to_string()),
        }
    }
}

impl From<crate::config::ConfigError> for OpsError {
    fn from(e: crate::config::ConfigError) -> Self {
        Self::Config(e.to_string())
    }
}

/// How long an artifact's download link is valid.
pub const LINK_TTL: std::time::Duration = std::time::Duration::from_secs(900);

/// An artifact of a production with a short-lived download link.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ArtifactLink {
    pub phase: String,
    #[serde(flatten)]
    pub artifact: Artifact,
    pub url: String,
    pub expires_at: Millis,
}

/// Operators' operations over one stack.
pub struct Ops {
    pub(crate) ports: Ports,
    pub(crate) transitioner: Transitioner,
    pub(crate) dispatcher: Dispatcher,
    pub(crate) stack: StackConfig,
    pub(crate) pipelines: Arc<Pipelines>,
    /// The code of the watcher kinds the stack's crates add (the scheduler's; empty where
    /// only their declarations are known, as in the CLI).
    pub(crate) watch_code: crate::runtime::watch::WatchCode,
}

impl Ops {
    /// Operations over the stack at `stack`, running `pipelines` (the definitions the
    /// stack's functions have: compiled in for the API, read from the stack by the CLI).
    pub fn new(ports: Ports, mut stack: StackConfig, pipelines: Arc<Pipelines>) -> Self {
        stack.topology = stack.topology.with_phases(pipelines.phase_names());
        Self {
            transitioner: Transitioner::new(
                ports.productions.clone(),
                ports.alarms.clone(),
                ports.clock.clone(),
            ),
            dispatcher: Dispatcher::new(ports.queue.clone(), Arc::new(stack.topology.clone())),
            ports,
            stack,
            pipelines,
            watch_code: Default::default(),
        }
    }

    /// The same operations over other definitions (a test's fixture pipelines, or the
    /// versions a deploy is about to add).
    pub fn with_pipelines(self, pipelines: Arc<Pipelines>) -> Self {
        let code = self.watch_code.clone();
        Self::new(self.ports, self.stack, pipelines).with_watch_code(code)
    }

    /// The same operations able to poll the watcher kinds `code` implements (the stack's
    /// `Stack::watch_code`: what the scheduler polls with).
    pub fn with_watch_code(mut self, code: crate::runtime::watch::WatchCode) -> Self {
        self.watch_code = code;
        self
    }

    pub fn stack(&self) -> &StackConfig {
        &self.stack
    }

    pub fn pipelines(&self) -> &Arc<Pipelines> {
        &self.pipelines
    }

    /// Checks the input against the default pipeline's schema, creates the production on
    /// that pipeline's latest version and sends its first phase's message.
    pub async fn start(&self, input_json: &str, caller: &Caller) -> Result<Production, OpsError> {
        Ok(self.start_once(None, input_json, None, caller).await?.0)
    }

    /// As [`Ops::start`], on `pipeline` (`None`: the stack's default) and under an
    /// idempotency key (scoped by the input's account): a repeat within [`START_KEY_TTL`]
    /// returns the first production (and `true`), spends nothing and sends nothing; the same
    /// key with another input is [`OpsError::KeyReused`]. Two racing repeats make one
    /// production: the creating transaction holds the key.
    pub async fn start_once(
        &self,
        pipeline: Option<&str>,
        input_json: &str,
        key: Option<&str>,
        caller: &Caller,
    ) -> Result<(Production, bool), OpsError> {
        caller.may(Permission::Start)?;
        let pipeline = self.pipelines.latest(pipeline).map_err(OpsError::Invalid)?;
        let input = pipeline.parse_input(input_json)?;
        if !caller.sees(Some(&input.account)) {
            return Err(OpsError::Forbidden(format!(
                "the input's account {:?} is not yours",
                input.account
            )));
        }
        // Skipping approvals is an admin's call (and never skips a required gate).
        if input.auto_approve && caller.role != crate::domain::Role::Admin {
            return Err(OpsError::Forbidden(
                "auto_approve needs the admin role (it skips the pipeline's approval gates)".into(),
            ));
        }
        self.check_access(&pipeline.definition, &input.account, &input.value)
            .await?;
        let now = self.ports.clock.now();
        let start_key = match key {
            Some(k) => Some(StartKey {
                account: input.account.clone(),
                key: check_start_key(k)?.to_string(),
                // The input as understood (defaults filled in, keys in order), so whitespace
                // or key order is not "another input"; and the pipeline it is for.
                input_hash: {
                    use sha2::Digest as _;
                    let canonical = serde_json::to_vec(&(pipeline.name(), &input.value))
                        .expect("input serialises");
                    hex::encode(sha2::Sha256::digest(canonical))
                },
                expires: now + START_KEY_TTL,
            }),
            None => None,
        };
        if let Some(k) = &start_key {
            // A repeat is answered before the limits are looked at: it spends nothing.
            if let Some(used) = self
                .ports
                .productions
                .start_key(&input.account, &k.key, now)
                .await?
            {
                return self.repeated(k, used).await;
            }
        }
        let t = start(
            uuid::Uuid::now_v7().to_string(),
            input.account.clone(),
            PipelineVersion {
                name: pipeline.name().to_string(),
                version: pipeline.version(),
            },
            &pipeline.definition.phase_names(),
            self.stack
                .gate_policy(&self.pipelines, pipeline, input.auto_approve)?,
            uuid::Uuid::now_v7().simple().to_string(),
            now,
        );
        let reservation = Reservation {
            account: input.account.clone(),
            month: month_of(now),
            defaults: self.stack.default_limits(),
        };
        // A read first, for the common refusal: nothing is attempted. The creating
        // transaction's condition is what makes the reservation atomic (two racing starts).
        let usage = self.usage(&input.account).await?;
        if usage.is_full() {
            return Err(OpsError::LimitReached(usage.refusal()));
        }
        let t = match self
            .transitioner
            .create(
                t,
                &input.value,
                &caller.actor,
                &reservation,
                start_key.as_ref(),
            )
            .await
        {
            Ok(t) => t,
            Err(StoreError::LimitReached) => {
                let usage = self.usage(&input.account).await?;
                return Err(OpsError::LimitReached(usage.refusal()));
            }
            Err(StoreError::StartKeyUsed(used)) => {
                let k = start_key
                    .as_ref()
                    .expect("only a keyed start meets a used key");
                return self.repeated(k, used).await;
            }
            Err(e) => return Err(e.into()),
        };
        self.dispatch(&t.production, t.dispatch.as_ref()).await?;
        Ok((t.production, false))
    }

    /// A start repeated under a key already held: the first production, or a conflict.
    async fn repeated(
        &self,
        k: &StartKey,
        used: UsedStartKey,
    ) -> Result<(Production, bool), OpsError> {
        if used.input_hash != k.input_hash {
            return Err(OpsError::KeyReused {
                key: k.key.clone(),
                production: used.production,
            });
        }
        match self.ports.productions.get(&used.production).await? {
            Some(p) => Ok((p, true)),
            None => Err(OpsError::Store(StoreError::Corrupt(format!(
                "start key {:?} names production {}, which does not exist",
                k.key, used.production
            )))),
        }
    }

    /// Carries out an operator's action: a production the caller cannot see is not found;
    /// refused (409) unless available, (403) unless the role allows it; otherwise committed
    /// with its audit event and dispatched.
    pub async fn act(&self, id: &str, act: Act, caller: &Caller) -> Result<Production, OpsError> {
        match &act {
            Act::Reject { feedback, .. } => input::text("feedback", feedback, 2000),
            Act::Override { reason, .. } => input::text("reason", reason, 500),
            _ => Ok(()),
        }
        .map_err(OpsError::Invalid)?;
        for _ in 0..5 {
            // Scoped read first: another account's production is unknown whatever the role.
            let p = self.get(id, caller).await?;
            caller.may(Permission::Act(act.action()))?;
            let input = match &act {
                Act::Edit { changes } => {
                    let current = self
                        .ports
                        .productions
                        .input(id)
                        .await?
                        .ok_or_else(|| OpsError::NotFound(format!("input of {id}")))?;
                    // Edited under the version it runs on (its schema says what may change).
                    Some(self.pipeline_of(&p)?.edited(&current, changes)?.value)
                }
                Act::Override {
                    jump_to: Some(to),
                    outputs,
                    ..
                } => {
                    self.supply_outputs(&p, to, outputs).await?;
                    None
                }
                _ => None,
            };
            let written = self
                .transitioner
                .write(
                    p,
                    act.clone().into(),
                    &caller.actor,
                    &[],
                    input.as_ref(),
                    OnConflict::GiveUp,
                )
                .await?;
            match written {
                Written::Committed(t) => {
                    self.dispatch(&t.production, t.dispatch.as_ref()).await?;
                    return Ok(t.production);
                }
                Written::Refused(e) => return Err(e.into()),
                Written::Gone => return Err(OpsError::NotFound(id.into())),
                // Someone else changed it first: read and decide again.
                Written::Conflicted => continue,
            }
        }
        Err(OpsError::Store(StoreError::Unavailable(format!(
            "production {id} kept changing; try again"
        ))))
    }

    /// The pipeline version `p` runs on.
    fn pipeline_of(
        &self,
        p: &Production,
    ) -> Result<&std::sync::Arc<crate::pipeline::Pipeline>, OpsError> {
        self.pipelines
            .get(&p.pipeline, p.pipeline_version)
            .ok_or_else(|| {
                OpsError::Config(format!(
                    "pipeline {} v{} is not deployed",
                    p.pipeline, p.pipeline_version
                ))
            })
    }

    /// A jump to `to` must leave every phase from there on the outputs it reads: each one
    /// the jump skips is refused, naming it, unless the admin supplied it, checked against
    /// the skipped phase's output contract and stored where the phase's own would be.
    async fn supply_outputs(
        &self,
        p: &Production,
        to: &str,
        outputs: &[crate::domain::SuppliedOutput],
    ) -> Result<(), OpsError> {
        let Some(i) = p.phase_index(to) else {
            // `decide` names the unknown phase.
            return Ok(());
        };
        let pipeline = self.pipeline_of(p)?;
        let supplied: Vec<&str> = outputs.iter().map(|o| o.phase.as_str()).collect();
        let unmet = pipeline.definition.unmet_reads(&p.phases, i, &supplied);
        if let Some((skipped, reader)) = unmet.first() {
            return Err(OpsError::Invalid(format!(
                "jumping to {to} skips {skipped}, whose output {reader} reads; supply it \
                 (outputs.{skipped}, or --output {skipped}=JSON) matching {skipped}'s output \
                 contract"
            )));
        }
        for o in outputs {
            pipeline
                .check_output(&o.phase, &o.output)
                .map_err(|e| OpsError::Invalid(format!("outputs.{}: {e}", o.phase)))?;
        }
        for o in outputs {
            // Only a phase the jump skips takes an output; `decide` refuses any other.
            let Some(ph) = p.phase(&o.phase) else {
                continue;
            };
            let stored = crate::ports::StoredOutput {
                body: o.output.clone(),
                artifacts: vec![],
            };
            self.ports
                .outputs
                .put(&p.id, &o.phase, ph.attempt + 1, &stored)
                .await?;
        }
        Ok(())
    }

    async fn dispatch(
        &self,
        p: &Production,
        d: Option<&crate::domain::Dispatch>,
    ) -> Result<(), OpsError> {
        let Some(d) = d else { return Ok(()) };
        self.dispatcher
            .send_one(&p.id, d)
            .await
            .map_err(|e| OpsError::DispatchFailed {
                id: p.id.clone(),
                reason: e.0,
            })
    }

    /// A production as the caller sees it: another account's is not found, so ids cannot
    /// be probed.
    pub async fn get(&self, id: &str, caller: &Caller) -> Result<Production, OpsError> {
        caller.may(Permission::Read)?;
        input::id("production id", id).map_err(OpsError::Invalid)?;
        match self.ports.productions.get(id).await? {
            Some(p) if caller.sees(Some(&p.account)) => Ok(p),
            _ => Err(OpsError::NotFound(id.into())),
        }
    }

    /// The production's succeeded phases' outputs, each whole.
    pub async fn outputs(
        &self,
        p: &Production,
    ) -> Result<BTreeMap<String, serde_json::Value>, OpsError> {
        Ok(self.read_outputs(p, true).await?.0)
    }

    /// The artifacts of the production's succeeded phases, each with a download link valid
    /// for [`LINK_TTL`].
    pub async fn artifacts(&self, p: &Production) -> Result<Vec<ArtifactLink>, OpsError> {
        Ok(self.read_outputs(p, false).await?.1)
    }

    /// Outputs and artifacts (with links), as a production is shown: an output kept in the
    /// bucket is given by reference (`view::reference`), not downloaded.
    pub async fn detail(
        &self,
        p: &Production,
    ) -> Result<(BTreeMap<String, serde_json::Value>, Vec<ArtifactLink>), OpsError> {
        self.read_outputs(p, false).await
    }

    /// One read of each phase's output: whole, or one kept in the bucket by reference.
    async fn read_outputs(
        &self,
        p: &Production,
        whole: bool,
    ) -> Result<(BTreeMap<String, serde_json::Value>, Vec<ArtifactLink>), OpsError> {
        use crate::ports::OutputPeek;
        let mut out = BTreeMap::new();
        let mut links = Vec::new();
        let expires_at = self.ports.clock.now() + LINK_TTL.as_millis() as Millis;
        for ph in &p.phases {
            let Some(key) = &ph.output else { continue };
            let peeked = match whole {
                true => self
                    .ports
                    .outputs
                    .get(&p.id, key)
                    .await?
                    .map(OutputPeek::Whole),
                false => self.ports.outputs.peek(&p.id, key).await?,
            };
            let (body, artifacts) = match peeked {
                None => continue,
                Some(OutputPeek::Whole(stored)) => (stored.body, stored.artifacts),
                Some(OutputPeek::InBucket {
                    key,
                    bytes,
                    artifacts,
                }) => {
                    // Its key is its content's SHA-256 (`Artifact::of`).
                    let sha256 = key
                        .rsplit('/')
                        .next()
                        .and_then(|f| f.split('.').next())
                        .unwrap_or_default();
                    let reference = crate::view::reference(&p.id, &ph.name, bytes, sha256);
                    (reference, artifacts)
                }
            };
            for a in artifacts {
                links.push(ArtifactLink {
                    phase: ph.name.clone(),
                    url: self.ports.artifacts.presign(&a.key, LINK_TTL).await?,
                    expires_at,
                    artifact: a,
                });
            }
            out.insert(ph.name.clone(), body);
        }
        Ok((out, links))
    }

    /// One phase's output, whole; or, when it is kept in the bucket and longer than
    /// `whole_up_to`, a download link valid for [`LINK_TTL`] (not downloaded here).
    pub async fn output(
        &self,
        p: &Production,
        phase: &str,
        whole_up_to: usize,
    ) -> Result<PhaseOutput, OpsError> {
        let Some(ph) = p.phase(phase) else {
            return Err(OpsError::Missing(format!(
                "production {} has no phase {phase:?} (its phases: {})",
                p.id,
                p.phases
                    .iter()
                    .map(|ph| ph.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let missing = || {
            OpsError::Missing(format!(
                "phase {phase} of production {} has no output ({})",
                p.id,
                ph.status.as_str()
            ))
        };
        let key = ph.output.as_ref().ok_or_else(missing)?;
        if let Some(crate::ports::OutputPeek::InBucket { key, bytes, .. }) =
            self.ports.outputs.peek(&p.id, key).await?
            && bytes as usize > whole_up_to
        {
            return Ok(PhaseOutput {
                body: None,
                bytes: bytes as usize,
                link: Some(self.ports.artifacts.presign(&key, LINK_TTL).await?),
            });
        }
        let stored = self
            .ports
            .outputs
            .get(&p.id, key)
            .await?
            .ok_or_else(missing)?;
        Ok(PhaseOutput {
            bytes: serde_json::to_string(&stored.body)
                .map(|t| t.len())
                .unwrap_or(0),
            body: Some(stored.body),
            link: None,
        })
    }

    /// The bytes of one of the production's artifacts (the caller may read it).
    pub async fn artifact_bytes(&self, a: &ArtifactLink) -> Result<Vec<u8>, OpsError> {
        self.ports
            .artifacts
            .get(&a.artifact.key)
            .await?
            .ok_or_else(|| OpsError::NotFound(format!("artifact {}", a.artifact.key)))
    }

    /// An account's productions, newest first, a page at a time from `after`; `status`
    /// keeps only those in that status (read through an index: one read per production
    /// returned). An account the caller cannot see has none.
    /// A page of productions as a request asks it (the CLI's `list`, the API's
    /// `/productions` and `/approvals`): the account named or the caller's own.
    pub async fn list_productions(
        &self,
        q: &requests::ListProductions,
        caller: &Caller,
    ) -> Result<Page<Production>, OpsError> {
        let account = requests::account_of(caller, q.account.as_deref())?;
        self.list(account, q.status, q.limit, q.cursor.as_deref(), caller)
            .await
    }

    pub async fn list(
        &self,
        account: &str,
        status: Option<ProductionStatus>,
        limit: usize,
        after: Option<&str>,
        caller: &Caller,
    ) -> Result<Page<Production>, OpsError> {
        caller.may(Permission::Read)?;
        input::count("limit", limit, 1000).map_err(OpsError::Invalid)?;
        if !caller.sees(Some(account)) {
            return Ok(Page::last(vec![]));
        }
        Ok(self
            .ports
            .productions
            .list(account, status, limit, after)
            .await?)
    }

    /// An account's limits and what it uses of them this month.
    pub async fn account_usage(
        &self,
        account: &str,
        caller: &Caller,
    ) -> Result<AccountUsage, OpsError> {
        caller.may(Permission::Read)?;
        if !caller.sees(Some(account)) {
            return Err(OpsError::NotFound(format!("account {account}")));
        }
        self.usage(account).await
    }

    async fn usage(&self, account: &str) -> Result<AccountUsage, OpsError> {
        let month = month_of(self.ports.clock.now());
        Ok(self
            .ports
            .accounts
            .usage(account, &month, self.stack.default_limits())
            .await?)
    }

    /// Sets an account's own limits; `None` falls back to the stack's default.
    pub async fn set_limits(
        &self,
        account: &str,
        limits: Limits,
        caller: &Caller,
    ) -> Result<AccountUsage, OpsError> {
        caller.may(Permission::SetLimits)?;
        if limits.monthly_allowance == Some(0) || limits.max_concurrent == Some(0) {
            return Err(OpsError::Invalid(
                "a limit is at least 1 (use none for unlimited; cancel productions to stop an account)"
                    .into(),
            ));
        }
        self.ports.accounts.set_limits(account, limits).await?;
        self.account_usage(account, caller).await
    }

    /// The fields of `input` its definition marks `x-account-allows`, each allowed by the
    /// account (403 naming the first that is not). Reads the account only where a field is
    /// marked.
    async fn check_access(
        &self,
        definition: &crate::pipeline::Definition,
        account: &str,
        input: &serde_json::Value,
    ) -> Result<(), OpsError> {
        let checks = definition.account_checks();
        if checks.is_empty() {
            return Ok(());
        }
        let access = self.ports.accounts.access(account).await?;
        crate::domain::access::check_input(&access, account, &checks, input)
            .map_err(OpsError::Forbidden)
    }

    /// What an account may reach outside the stack (its own account's callers, and the
    /// stack's operators).
    pub async fn account_access(
        &self,
        account: &str,
        caller: &Caller,
    ) -> Result<crate::domain::access::AccountAccess, OpsError> {
        caller.may(Permission::Read)?;
        if !caller.sees(Some(account)) {
            return Err(OpsError::NotFound(format!("account {account}")));
        }
        Ok(self.ports.accounts.access(account).await?)
    }

    /// Sets what an account may reach (a stack operator with the admin role); audited as
    /// `account.access_changed` with the old and the new.
    pub async fn set_account_access(
        &self,
        account: &str,
        access: crate::domain::access::AccountAccess,
        caller: &Caller,
    ) -> Result<crate::domain::access::AccountAccess, OpsError> {
        caller.may(Permission::SetLimits)?;
        crate::domain::input::id("account", account).map_err(OpsError::Invalid)?;
        access
            .check(account, &self.stack.stack)
            .map_err(OpsError::Invalid)?;
        let before = self.ports.accounts.access(account).await?;
        let detail = format!(
            "account {account}: {} -> {}",
            serde_json::to_string(&before).expect("access serialises"),
            serde_json::to_string(&access).expect("access serialises")
        );
        self.audit_row(
            &format!("ACCT#{account}"),
            crate::domain::AuditKind::AccountAccessChanged,
            &detail,
            None,
            caller,
        )
        .await?;
        self.ports.accounts.set_access(account, &access).await?;
        Ok(access)
    }

    /// One cheap read of the state table: is the store reachable?
    pub async fn probe(&self) -> Result<(), OpsError> {
        self.ports.productions.get("health-probe").await?;
        Ok(())
    }

    /// The owner of what an alarm or a DLQ message names: the production's account, if
    /// `id` is a production.
    async fn owner(&self, id: &str) -> Result<Option<String>, OpsError> {
        Ok(self.ports.productions.get(id).await?.map(|p| p.account))
    }
}

/// How long a start's idempotency key holds: a client's retries come within it.
pub const START_KEY_TTL: Millis = 24 * 3600 * 1000;

/// An idempotency key: 1 to 255 visible ASCII characters (the `Idempotency-Key` header's
/// usual bounds), so it is safe in a key and in a message.
fn check_start_key(key: &str) -> Result<&str, OpsError> {
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(OpsError::Invalid(
            "an idempotency key is 1 to 255 visible ASCII characters".into(),
        ));
    }
    Ok(key)
}
