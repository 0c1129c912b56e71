//! Work that arrives by itself, one intake path for every source (F-01, F-02): an item is
//! checked against its kind's schema for its event type, filtered by the source's `when`,
//! mapped to the pipeline's input, held by its dedupe key for the source's window, and
//! started under the key `event:<event id>` (the start checks the input against the
//! pipeline's schema). Every item is stored with what became of it (`GET /events`),
//! audited (`event.ingested`, `event.deduped`) and counted on its source; a source whose
//! items keep failing raises `source_failing`.
//!
//! Crash safety: the event and its dedupe key are stored together before the start; a
//! sender's retry that finds the key held by an event still `received` finishes that
//! event's start (the same production, by its key) instead of deduping it.

use std::collections::BTreeMap;

use rand::RngCore as _;
use serde_json::Value;

use super::{Ops, OpsError};
use crate::domain::alarms::{AlarmKind, Raise, Severity};
use crate::domain::authz::Permission;
use crate::domain::events::{
    Connector, ConnectorSpec, EventOutcome, FAILURES_ALARM, InboundEvent, MAX_KEPT_PAYLOAD,
    SourceKind,
};
use crate::domain::{Actor, AuditKind, Caller, Millis, Outcome, Role, Scope, input};
use crate::pipeline::intake::{self, ItemSchemas as _};
use crate::ports::{AuditRecord, Begun, Page};

/// Where an item came from and what its source does with it.
pub(crate) struct Source<'a> {
    pub name: String,
    pub account: &'a str,
    pub kind: SourceKind,
    /// A pipeline crate's watcher kind: its items' schemas.
    pub declared: Option<&'a crate::pipeline::watch::DeclaredKind>,
    pub pipeline: Option<&'a str>,
    pub mapping: &'a BTreeMap<String, Value>,
    pub when: &'a BTreeMap<String, Value>,
    /// Event types that start work; `None`: all the kind takes.
    pub events: Option<&'a [String]>,
    pub window: Millis,
}

impl<'a> Source<'a> {
    fn of_connector(c: &'a Connector) -> Self {
        Self {
            name: c.source(),
            account: &c.spec.account,
            kind: c.spec.kind,
            declared: None,
            pipeline: c.spec.pipeline.as_deref(),
            mapping: &c.spec.mapping,
            when: &c.spec.when,
            events: Some(&c.spec.events),
            window: c.spec.dedupe_window_seconds as Millis * 1000,
        }
    }
}

/// One arriving item.
pub(crate) struct Arrival {
    pub event_type: String,
    pub dedupe_key: String,
    pub item: Value,
}

/// A connector just made, with its signing secret (shown this once).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct CreatedConnector {
    #[serde(flatten)]
    pub connector: Connector,
    pub secret: String,
    /// Where the sender posts, relative to the API's base URL.
    pub path: String,
}

/// Which events to list.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub account: Option<String>,
    pub source: Option<String>,
    pub outcome: Option<EventOutcome>,
}

impl Ops {
    /// Creates a connector (admin): `POST /events/<id>` signed with the secret it answers
    /// (kept in SSM) starts the pipeline with what its mapping makes of each item.
    pub async fn create_connector(
        &self,
        spec: ConnectorSpec,
        caller: &Caller,
    ) -> Result<CreatedConnector, OpsError> {
        caller.may(Permission::ManageSources)?;
        if !caller.sees(Some(&spec.account)) {
            return Err(OpsError::Forbidden(format!(
                "account {:?} is not yours",
                spec.account
            )));
        }
        spec.check().map_err(OpsError::Invalid)?;
        intake::check_mapping(&spec.mapping, &spec.when).map_err(OpsError::Invalid)?;
        if let Some(et) = spec.events.iter().find(|et| !spec.kind.takes(et)) {
            return Err(OpsError::Invalid(format!(
                "events: {} connectors do not take {et:?} events",
                spec.kind.as_str()
            )));
        }
        self.pipelines
            .latest(spec.pipeline.as_deref())
            .map_err(OpsError::Invalid)?;
        let mut bytes = [0u8; 8];
        rand::rng().fill_bytes(&mut bytes);
        let id = format!("con_{}", hex::encode(bytes));
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        let secret = match spec.kind {
            SourceKind::Standard => {
                use base64::Engine as _;
                format!(
                    "whsec_{}",
                    base64::engine::general_purpose::STANDARD.encode(key)
                )
            }
            _ => hex::encode(key),
        };
        let secret_param = format!("/shepherd/{}/connectors/{id}", self.stack.stack);
        self.ports
            .params
            .put_secret(&secret_param, &secret)
            .await
            .map_err(|e| OpsError::Store(crate::ports::StoreError::Unavailable(e.to_string())))?;
        let c = Connector {
            id: id.clone(),
            spec,
            secret_param,
            created_at: self.ports.clock.now(),
            created_by: caller.actor.0.clone(),
            stats: Default::default(),
        };
        self.ports.intake.create_connector(&c).await?;
        self.source_audit(
            &format!("CONN#{id}"),
            &c.spec.account,
            AuditKind::ConnectorCreated,
            None,
            &format!(
                "connector {id} ({}, {}) -> pipeline {}",
                c.spec.name,
                c.spec.kind.as_str(),
                c.spec.pipeline.as_deref().unwrap_or("(default)")
            ),
            Outcome::Success,
            &caller.actor,
        )
        .await;
        Ok(CreatedConnector {
            path: format!("/events/{id}"),
            connector: c,
            secret,
        })
    }

    /// The connectors the caller sees, with their counts.
    pub async fn connectors(
        &self,
        account: Option<&str>,
        caller: &Caller,
    ) -> Result<Vec<Connector>, OpsError> {
        caller.may(Permission::Read)?;
        let account = scoped(caller, account)?;
        Ok(self.ports.intake.connectors(account).await?)
    }

    pub async fn connector(&self, id: &str, caller: &Caller) -> Result<Connector, OpsError> {
        caller.may(Permission::Read)?;
        input::id("connector id", id).map_err(OpsError::Invalid)?;
        match self.ports.intake.connector(id).await? {
            Some(mut c) if caller.sees(Some(&c.spec.account)) => {
                c.stats = self.ports.intake.stats(&c.source()).await?;
                Ok(c)
            }
            _ => Err(OpsError::NotFound(format!("connector {id}"))),
        }
    }

    /// Removes a connector and its secret (admin); its events stay.
    pub async fn delete_connector(&self, id: &str, caller: &Caller) -> Result<(), OpsError> {
        caller.may(Permission::ManageSources)?;
        let c = self.connector(id, caller).await?;
        self.ports.intake.delete_connector(id).await?;
        if let Err(e) = self.ports.params.delete(&c.secret_param).await {
            tracing::warn!(connector = %id, error = %e, "a removed connector's secret stays in SSM");
        }
        self.source_audit(
            &format!("CONN#{id}"),
            &c.spec.account,
            AuditKind::ConnectorDeleted,
            None,
            &format!("connector {id} ({}) removed", c.spec.name),
            Outcome::Success,
            &caller.actor,
        )
        .await;
        Ok(())
    }

    /// A sender's webhook to connector `id`: its signature checked first (a bad one is
    /// `Unauthorized` and stores nothing), then the intake path. The event and what
    /// became of it; a refused item is `Invalid`, naming the field.
    pub async fn receive(
        &self,
        id: &str,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Result<InboundEvent, OpsError> {
        input::id("connector id", id).map_err(OpsError::Invalid)?;
        let c = self
            .ports
            .intake
            .connector(id)
            .await?
            .ok_or_else(|| OpsError::NotFound(format!("connector {id}")))?;
        let secret =
            self.ports.params.get(&c.secret_param).await.map_err(|e| {
                OpsError::Store(crate::ports::StoreError::Unavailable(e.to_string()))
            })?;
        verify(c.spec.kind, &secret, headers, body)?;
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let item: Result<Value, String> =
            serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"));
        let (event_type, dedupe_key) = match c.spec.kind {
            SourceKind::Github => (header("x-github-event"), header("x-github-delivery")),
            _ => (
                item.as_ref()
                    .ok()
                    .and_then(|v| v["type"].as_str())
                    .map(String::from),
                header("webhook-id"),
            ),
        };
        let src = Source::of_connector(&c);
        let problem = match (&item, &event_type, &dedupe_key) {
            (Err(e), _, _) => Some(e.clone()),
            (_, None, _) if c.spec.kind == SourceKind::Github => {
                Some("the X-GitHub-Event header is missing".into())
            }
            (_, None, _) => Some("type: is required".into()),
            (_, _, None) if c.spec.kind == SourceKind::Github => {
                Some("the X-GitHub-Delivery header is missing".into())
            }
            _ => None,
        };
        let arrival = Arrival {
            event_type: event_type.unwrap_or_default(),
            dedupe_key: dedupe_key.unwrap_or_default(),
            item: item.unwrap_or(Value::Null),
        };
        let e = match problem {
            Some(p) => self.refuse(&src, arrival, None, p).await?,
            None => self.ingest(&src, arrival, None).await?,
        };
        match (&e.outcome, &e.error) {
            (EventOutcome::Failed, Some(why)) => {
                Err(OpsError::Invalid(format!("{why} (event {})", e.id)))
            }
            _ => Ok(e),
        }
    }

    /// Events the caller sees, newest first, filtered by source and outcome (a page may
    /// hold fewer than `limit` and still have a next).
    pub async fn events(
        &self,
        filter: &EventFilter,
        caller: &Caller,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<InboundEvent>, OpsError> {
        caller.may(Permission::Read)?;
        let account = scoped(caller, filter.account.as_deref())?;
        let mut page = self.ports.intake.events(account, limit, after).await?;
        page.items.retain(|e| {
            filter.source.as_deref().is_none_or(|s| e.source == s)
                && filter.outcome.is_none_or(|o| e.outcome == o)
        });
        Ok(page)
    }

    pub async fn event(&self, id: &str, caller: &Caller) -> Result<InboundEvent, OpsError> {
        caller.may(Permission::Read)?;
        input::id("event id", id).map_err(OpsError::Invalid)?;
        match self.ports.intake.event(id).await? {
            Some(e) if caller.sees(Some(&e.account)) => Ok(e),
            _ => Err(OpsError::NotFound(format!("event {id}"))),
        }
    }

    /// Clears a stored event's dedupe key and submits its item again through its source
    /// (operator): a new event, audited with who and why (`event.resubmitted`).
    pub async fn resubmit_event(
        &self,
        id: &str,
        reason: &str,
        caller: &Caller,
    ) -> Result<InboundEvent, OpsError> {
        caller.may(Permission::OperateSources)?;
        input::text("reason", reason, 500).map_err(OpsError::Invalid)?;
        let e = self.event(id, caller).await?;
        if e.payload.is_null() {
            return Err(OpsError::Invalid(format!(
                "event {id} was kept without its item (over {MAX_KEPT_PAYLOAD} bytes, or not JSON); ask the sender to send it again"
            )));
        }
        let gone = || {
            OpsError::Invalid(format!(
                "its source {} was removed; there is nothing to submit it through",
                e.source
            ))
        };
        let (connector, watcher) = match e.source.split_once(':') {
            Some(("connector", cid)) => (
                Some(self.ports.intake.connector(cid).await?.ok_or_else(gone)?),
                None,
            ),
            Some(("watcher", wid)) => (
                None,
                Some(self.ports.intake.watcher(wid).await?.ok_or_else(gone)?),
            ),
            _ => {
                return Err(OpsError::Invalid(format!(
                    "{} cannot be re-submitted",
                    e.source
                )));
            }
        };
        let src = match (&connector, &watcher) {
            (Some(c), _) => Source::of_connector(c),
            (_, Some(w)) => Source::of_watcher(w, self.declared(w).map_err(OpsError::Invalid)?),
            _ => unreachable!("one of the two"),
        };
        self.ports
            .intake
            .clear_key(&e.source, &e.dedupe_key)
            .await?;
        self.source_audit(
            &format!("EVENT#{id}"),
            &e.account,
            AuditKind::EventResubmitted,
            e.production.as_deref(),
            &format!(
                "event {id} ({}): key {:?} cleared; {reason}",
                e.source, e.dedupe_key
            ),
            Outcome::Success,
            &caller.actor,
        )
        .await;
        let arrival = Arrival {
            event_type: e.event_type.clone(),
            dedupe_key: e.dedupe_key.clone(),
            item: e.payload.clone(),
        };
        self.ingest(&src, arrival, Some(e.id)).await
    }

    /// The intake path (see the module's doc).
    pub(crate) async fn ingest(
        &self,
        src: &Source<'_>,
        a: Arrival,
        resubmitted_from: Option<String>,
    ) -> Result<InboundEvent, OpsError> {
        let mut e = self.new_event(src, &a, resubmitted_from);
        if src.events.is_some_and(|ev| !ev.contains(&a.event_type)) {
            let why = format!("{:?} events start nothing here", a.event_type);
            return self.settle(src, e, EventOutcome::Ignored, Some(why)).await;
        }
        let checked = match src.declared {
            Some(kind) => kind.check_item(&a.event_type, &a.item),
            None => src.kind.check(&a.event_type, &a.item),
        };
        if let Err(why) = checked {
            return self.settle(src, e, EventOutcome::Failed, Some(why)).await;
        }
        if !intake::matches(src.when, &a.item) {
            let why = "the source's `when` does not match it".to_string();
            return self.settle(src, e, EventOutcome::Ignored, Some(why)).await;
        }
        let input = match intake::map(src.mapping, &a.item, src.account) {
            Ok(i) => i,
            Err(why) => return self.settle(src, e, EventOutcome::Failed, Some(why)).await,
        };
        let now = self.ports.clock.now();
        match self.ports.intake.begin(&e, now + src.window, now).await? {
            Begun::New => {}
            // A start cut short (a crash, a store error): finish it, as the same event.
            Begun::Held(first) if first.outcome == EventOutcome::Received => e = *first,
            Begun::Held(first) => {
                e.duplicate_of = Some(first.id.clone());
                e.production = first.production.clone();
                return self.settle(src, e, EventOutcome::Deduped, None).await;
            }
        }
        let caller = Caller::new(
            Actor(src.name.clone()),
            Role::Admin,
            Scope::Account(src.account.to_string()),
        );
        let key = format!("event:{}", e.id);
        match self
            .start_once(src.pipeline, &input.to_string(), Some(&key), &caller)
            .await
        {
            Ok((p, _)) => {
                e.production = Some(p.id);
                self.settle(src, e, EventOutcome::Started, None).await
            }
            Err(OpsError::DispatchFailed { id, .. }) => {
                e.production = Some(id);
                self.settle(src, e, EventOutcome::Started, None).await
            }
            // The event stays `received`: the sender's retry finishes it.
            Err(err @ (OpsError::Store(_) | OpsError::Config(_))) => Err(err),
            Err(err) => {
                self.settle(src, e, EventOutcome::Failed, Some(err.to_string()))
                    .await
            }
        }
    }

    /// Stores an item refused before its schema could be read (not JSON, no event type).
    async fn refuse(
        &self,
        src: &Source<'_>,
        a: Arrival,
        resubmitted_from: Option<String>,
        why: String,
    ) -> Result<InboundEvent, OpsError> {
        let e = self.new_event(src, &a, resubmitted_from);
        self.settle(src, e, EventOutcome::Failed, Some(why)).await
    }

    fn new_event(
        &self,
        src: &Source<'_>,
        a: &Arrival,
        resubmitted_from: Option<String>,
    ) -> InboundEvent {
        InboundEvent {
            id: format!("ev_{}", uuid::Uuid::now_v7().simple()),
            source: src.name.clone(),
            account: src.account.to_string(),
            kind: src.kind,
            event_type: a.event_type.clone(),
            dedupe_key: a.dedupe_key.clone(),
            received_at: self.ports.clock.now(),
            outcome: EventOutcome::Received,
            production: None,
            error: None,
            duplicate_of: None,
            resubmitted_from,
            payload: kept(&a.item),
        }
    }

    /// Stores what became of `e`, counts it on its source, audits it, and alarms on a
    /// source whose items keep failing.
    async fn settle(
        &self,
        src: &Source<'_>,
        mut e: InboundEvent,
        outcome: EventOutcome,
        why: Option<String>,
    ) -> Result<InboundEvent, OpsError> {
        e.outcome = outcome;
        e.error = why.map(|w| crate::domain::redact::excerpt(&w, 1000));
        self.ports.intake.put_event(&e).await?;
        let now = self.ports.clock.now();
        let stats = self
            .ports
            .intake
            .count(&e.source, outcome, e.error.as_deref(), now)
            .await?;
        let (kind, result, detail) = match outcome {
            EventOutcome::Deduped => (
                AuditKind::EventDeduped,
                Outcome::Success,
                format!(
                    "{} {} key {:?}: a duplicate of {}",
                    e.source,
                    e.event_type,
                    e.dedupe_key,
                    e.duplicate_of.as_deref().unwrap_or("?")
                ),
            ),
            EventOutcome::Failed => (
                AuditKind::EventIngested,
                Outcome::Failure,
                format!(
                    "{} {} key {:?}: {}",
                    e.source,
                    e.event_type,
                    e.dedupe_key,
                    e.error.as_deref().unwrap_or_default()
                ),
            ),
            _ => (
                AuditKind::EventIngested,
                Outcome::Success,
                format!(
                    "{} {} key {:?}: {}{}",
                    e.source,
                    e.event_type,
                    e.dedupe_key,
                    outcome.as_str(),
                    e.production
                        .as_deref()
                        .map(|p| format!(" -> production {p}"))
                        .unwrap_or_default()
                ),
            ),
        };
        self.source_audit(
            &format!("EVENT#{}", e.id),
            &e.account,
            kind,
            e.production.as_deref(),
            &detail,
            result,
            &Actor(e.source.clone()),
        )
        .await;
        if outcome == EventOutcome::Failed && stats.consecutive_failures >= FAILURES_ALARM {
            let mut raise = Raise::new(
                AlarmKind::SourceFailing,
                &src.name,
                Severity::Warning,
                format!(
                    "{} ({}) refused its last {} items; the last: {}; see `shepherd events list --source {}`",
                    src.name,
                    src.kind.as_str(),
                    stats.consecutive_failures,
                    e.error.as_deref().unwrap_or_default(),
                    src.name
                ),
            );
            raise.account = Some(src.account.to_string());
            if let Err(err) = self.ports.alarms.raise(&raise, now).await {
                tracing::error!(source = %src.name, error = %err, "could not raise the source's alarm");
            }
        }
        Ok(e)
    }

    /// An audit row of a source's (best effort: what it records is already stored).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn source_audit(
        &self,
        subject: &str,
        account: &str,
        kind: AuditKind,
        production: Option<&str>,
        detail: &str,
        outcome: Outcome,
        actor: &Actor,
    ) {
        let record = AuditRecord {
            event_type: kind.as_str().into(),
            production_id: production.map(String::from),
            trace_id: None,
            account: Some(account.to_string()),
            outcome: outcome.as_str().into(),
            actor: actor.0.clone(),
            at: self.ports.clock.now(),
            phase: None,
            attempt: None,
            detail: Some(crate::domain::redact::redact(detail).text),
        };
        if let Err(e) = self.ports.audit.record(subject, &record).await {
            tracing::error!(subject, error = %e, kind = kind.as_str(), "could not write an audit row");
        }
    }
}

/// The account a listing is of: an account's callers their own; stack operators the one
/// they name, or all.
pub(crate) fn scoped<'a>(
    caller: &'a Caller,
    named: Option<&'a str>,
) -> Result<Option<&'a str>, OpsError> {
    match (&caller.scope, named) {
        (Scope::Account(a), Some(n)) if a != n => {
            Err(OpsError::Forbidden(format!("account {n:?} is not yours")))
        }
        (Scope::Account(a), _) => Ok(Some(a.as_str())),
        (Scope::Stack, n) => Ok(n),
    }
}

/// The item as kept with its event: redacted, or `null` past [`MAX_KEPT_PAYLOAD`].
fn kept(item: &Value) -> Value {
    let text = item.to_string();
    if text.len() > MAX_KEPT_PAYLOAD {
        return Value::Null;
    }
    let redacted = crate::domain::redact::redact(&text).text;
    serde_json::from_str(&redacted).unwrap_or(Value::Null)
}

/// Checks a sender's signature over the raw body, with the libraries that define them:
/// GitHub's `X-Hub-Signature-256` (HMAC-SHA256, `hmac`'s constant-time check) and
/// Standard Webhooks (`standardwebhooks`: id, timestamp within 5 minutes, any of several
/// signatures).
fn verify(
    kind: SourceKind,
    secret: &str,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<(), OpsError> {
    match kind {
        SourceKind::Github => {
            use hmac::Mac as _;
            let given = headers
                .get("x-hub-signature-256")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("sha256="))
                .and_then(|h| hex::decode(h).ok())
                .ok_or_else(|| {
                    OpsError::Unauthorized(
                        "X-Hub-Signature-256 is missing or not sha256=<hex>".into(),
                    )
                })?;
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
                .expect("HMAC takes any key");
            mac.update(body);
            mac.verify_slice(&given).map_err(|_| {
                OpsError::Unauthorized(
                    "X-Hub-Signature-256 does not verify with this connector's secret".into(),
                )
            })
        }
        _ => {
            let wh = standardwebhooks::Webhook::new(secret)
                .map_err(|e| OpsError::Config(format!("the connector's secret: {e}")))?;
            wh.verify(body, headers).map_err(|e| {
                OpsError::Unauthorized(format!("the Standard Webhooks signature: {e}"))
            })
        }
    }
}
