//! Watchers (F-13): a source polled on an interval (an Atom/RSS feed; a GitHub
//! repository's issues carrying a label), each new item through the intake path
//! (`events.rs`). The scheduler's tick polls the watchers that are due (a sparse index).
//!
//! The first poll records what is there and starts nothing. After it, an item not seen at
//! the last poll is new. The cursor (what was seen, the answer's `ETag`) is committed after
//! the starts it causes: a crash between them polls again, finds the same items, and their
//! dedupe keys start nothing twice. A failed poll counts: at
//! [`WATCHER_WARN_AFTER`](crate::domain::events::WATCHER_WARN_AFTER) in a row it raises
//! `watcher_failing`; at [`WATCHER_DISABLE_AFTER`](crate::domain::events::WATCHER_DISABLE_AFTER)
//! the watcher is disabled with a critical `watcher_disabled`, until an operator enables
//! it (which clears the count). A host's rate limit is not a failure: the next poll waits
//! for its reset.

use futures::StreamExt as _;
use serde::Serialize;
use serde_json::Value;

use super::events::{Arrival, Source};
use super::{Ops, OpsError};
use crate::domain::alarms::{AlarmKind, Raise, Severity};
use crate::domain::authz::Permission;
use crate::domain::events::{
    AfterError, SourceKind, WATCHER_DISABLE_AFTER, WatchCursor, Watcher, WatcherSpec, WatcherState,
    after_error,
};
use crate::domain::{Actor, AuditKind, Caller, Millis, Outcome, input};
use crate::pipeline::intake;
use crate::pipeline::watch::{self, DeclaredKind, Poll, Polled};
use crate::runtime::watch::WatchContext;

/// Watchers one tick polls at most; more wait for the next.
const DUE_PER_TICK: usize = 500;
/// Watchers polled at once.
const CONCURRENCY: usize = 8;
/// Items remembered per watcher (a source's latest).
const SEEN: usize = 1_000;
/// Pages of issues read per poll.
const PAGES: usize = 10;

/// What one tick did with the watchers.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct WatchTick {
    pub due: usize,
    pub polled: usize,
    /// New items that went through the intake path.
    pub items: usize,
    pub failed_polls: usize,
    pub disabled: usize,
    pub errors: usize,
}

impl Ops {
    /// Creates a watcher (admin); its first poll is at the next tick.
    pub async fn create_watcher(
        &self,
        spec: WatcherSpec,
        caller: &Caller,
    ) -> Result<Watcher, OpsError> {
        caller.may(Permission::ManageSources)?;
        if !caller.sees(Some(&spec.account)) {
            return Err(OpsError::Forbidden(format!(
                "account {:?} is not yours",
                spec.account
            )));
        }
        spec.check().map_err(OpsError::Invalid)?;
        if let Some(params) = &spec.params {
            let kind = self
                .pipelines
                .watch_kind(&spec.kind)
                .map_err(OpsError::Invalid)?;
            kind.check_params(params).map_err(OpsError::Invalid)?;
        }
        intake::check_mapping(&spec.mapping, &spec.when).map_err(OpsError::Invalid)?;
        if let Some(url) = &spec.url {
            crate::domain::webhooks::check_url(url, self.stack.allow_loopback_webhooks)
                .map_err(|e| OpsError::Invalid(format!("url: {e}")))?;
        }
        self.pipelines
            .latest(spec.pipeline.as_deref())
            .map_err(OpsError::Invalid)?;
        let now = self.ports.clock.now();
        let w = Watcher {
            id: format!("wat_{}", uuid::Uuid::now_v7().simple()),
            spec,
            state: WatcherState::Enabled,
            disabled_reason: None,
            cursor: WatchCursor::default(),
            consecutive_errors: 0,
            last_error: None,
            last_success_at: None,
            last_poll_at: None,
            next_poll_at: now,
            created_at: now,
            created_by: caller.actor.0.clone(),
            version: 1,
            stats: Default::default(),
        };
        self.ports.intake.create_watcher(&w).await?;
        self.watcher_audit(
            &w,
            AuditKind::WatcherCreated,
            Outcome::Success,
            "created",
            &caller.actor,
        )
        .await;
        Ok(w)
    }

    /// The watchers the caller sees: state, last success, consecutive errors, last error.
    pub async fn watchers(
        &self,
        account: Option<&str>,
        caller: &Caller,
    ) -> Result<Vec<Watcher>, OpsError> {
        caller.may(Permission::Read)?;
        let account = super::events::scoped(caller, account)?;
        Ok(self.ports.intake.watchers(account).await?)
    }

    /// The watcher kinds the stack's pipeline crates add, as declared: the params each
    /// takes and the items it makes (the shipped kinds, `feed` and `github_issues`, are
    /// described in docs/arrivals.md).
    pub fn watch_kinds(&self, caller: &Caller) -> Result<Vec<DeclaredKind>, OpsError> {
        caller.may(Permission::Read)?;
        Ok(self.pipelines.watch_kinds().cloned().collect())
    }

    pub async fn watcher(&self, id: &str, caller: &Caller) -> Result<Watcher, OpsError> {
        caller.may(Permission::Read)?;
        input::id("watcher id", id).map_err(OpsError::Invalid)?;
        match self.ports.intake.watcher(id).await? {
            Some(mut w) if caller.sees(Some(&w.spec.account)) => {
                w.stats = self.ports.intake.stats(&w.source()).await?;
                Ok(w)
            }
            _ => Err(OpsError::NotFound(format!("watcher {id}"))),
        }
    }

    /// Enables a watcher (operator: clears its error count, polls at the next tick) or
    /// disables it.
    pub async fn set_watcher_enabled(
        &self,
        id: &str,
        enabled: bool,
        caller: &Caller,
    ) -> Result<Watcher, OpsError> {
        caller.may(Permission::OperateSources)?;
        for _ in 0..4 {
            let mut w = self.watcher(id, caller).await?;
            if enabled {
                w.state = WatcherState::Enabled;
                w.consecutive_errors = 0;
                w.disabled_reason = None;
                w.next_poll_at = self.ports.clock.now();
            } else {
                w.state = WatcherState::Disabled;
                w.disabled_reason = Some(format!("disabled by {}", caller.actor.0));
            }
            w.version += 1;
            // Counts live with the source, not in the watcher's item.
            let stats = std::mem::take(&mut w.stats);
            let committed = self.ports.intake.commit_watcher(&w).await?;
            w.stats = stats;
            if committed {
                let (kind, what) = match enabled {
                    true => (
                        AuditKind::WatcherEnabled,
                        "enabled; its error count cleared",
                    ),
                    false => (AuditKind::WatcherDisabled, "disabled by an operator"),
                };
                self.watcher_audit(&w, kind, Outcome::Success, what, &caller.actor)
                    .await;
                return Ok(w);
            }
        }
        Err(OpsError::Busy(format!(
            "watcher {id} is changing; try again"
        )))
    }

    /// Removes a watcher (admin); its events stay.
    pub async fn delete_watcher(&self, id: &str, caller: &Caller) -> Result<(), OpsError> {
        caller.may(Permission::ManageSources)?;
        let w = self.watcher(id, caller).await?;
        self.ports.intake.delete_watcher(id).await?;
        self.watcher_audit(
            &w,
            AuditKind::WatcherDeleted,
            Outcome::Success,
            "removed",
            &caller.actor,
        )
        .await;
        Ok(())
    }

    /// The scheduler's tick over watchers: every due one polled.
    pub async fn run_watchers(&self) -> Result<WatchTick, OpsError> {
        let now = self.ports.clock.now();
        let due = self.ports.intake.due_watchers(now, DUE_PER_TICK).await?;
        let mut report = WatchTick {
            due: due.len(),
            ..WatchTick::default()
        };
        let results: Vec<_> = futures::stream::iter(due)
            .map(|id| async move { (self.poll_watcher(&id, now).await, id) })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (res, id) in results {
            match res {
                Ok(Some(t)) => {
                    report.polled += 1;
                    report.items += t.items;
                    report.failed_polls += t.failed_polls;
                    report.disabled += t.disabled;
                }
                Ok(None) => {}
                Err(e) => {
                    report.errors += 1;
                    tracing::error!(watcher = %id, error = %e, "watcher tick failed; it polls again at the next tick");
                }
            }
        }
        Ok(report)
    }

    /// One watcher's poll at `now`: `None` if it was not due (another tick did it).
    async fn poll_watcher(&self, id: &str, now: Millis) -> Result<Option<WatchTick>, OpsError> {
        let Some(mut w) = self.ports.intake.watcher(id).await? else {
            return Ok(None);
        };
        if w.state != WatcherState::Enabled || w.next_poll_at > now {
            return Ok(None);
        }
        let mut tick = WatchTick::default();
        w.last_poll_at = Some(now);
        w.next_poll_at = now + Millis::from(w.spec.every_minutes) * 60_000;
        match self.poll(&w).await {
            Ok(Poll::Unchanged) => self.polled_ok(&mut w, now),
            Ok(Poll::Limited(until)) => {
                w.next_poll_at = until.max(w.next_poll_at);
            }
            Ok(Poll::Items { items, etag }) => {
                let seen: std::collections::HashSet<&str> =
                    w.cursor.seen.iter().map(String::as_str).collect();
                let fresh: Vec<&Polled> = items
                    .iter()
                    .filter(|p| !seen.contains(p.identity.as_str()))
                    .collect();
                if w.cursor.primed {
                    let declared = self.declared(&w).map_err(OpsError::Invalid)?;
                    let src = Source::of_watcher(&w, declared);
                    // Oldest first: feeds and issue lists come newest first.
                    for p in fresh.iter().rev() {
                        let arrival = Arrival {
                            event_type: p.event_type.clone(),
                            dedupe_key: p.dedupe_key.clone(),
                            item: p.item.clone(),
                        };
                        // A store failure leaves the cursor as it was: the next tick
                        // polls again, and the items already started are deduped.
                        self.ingest(&src, arrival, None).await?;
                        tick.items += 1;
                    }
                }
                w.cursor.primed = true;
                w.cursor.seen = items
                    .iter()
                    .take(SEEN)
                    .map(|p| p.identity.clone())
                    .collect();
                w.cursor.etag = etag;
                self.polled_ok(&mut w, now);
            }
            Err(why) => {
                let why = crate::domain::redact::excerpt(&why, 500);
                tick.failed_polls = 1;
                let step = after_error(w.consecutive_errors);
                w.consecutive_errors += 1;
                w.last_error = Some(why.clone());
                self.watcher_audit(
                    &w,
                    AuditKind::WatcherError,
                    Outcome::Failure,
                    &format!(
                        "poll {} of {} failed: {why}",
                        w.consecutive_errors, WATCHER_DISABLE_AFTER
                    ),
                    &Actor(w.source()),
                )
                .await;
                let (kind, severity, what) = match step {
                    AfterError::Count => (None, Severity::Warning, ""),
                    AfterError::Warn => (
                        Some(AlarmKind::WatcherFailing),
                        Severity::Warning,
                        "is failing",
                    ),
                    AfterError::Disable => {
                        w.state = WatcherState::Disabled;
                        w.disabled_reason = Some(format!(
                            "{} polls in a row failed; the last: {why}",
                            w.consecutive_errors
                        ));
                        tick.disabled = 1;
                        (
                            Some(AlarmKind::WatcherDisabled),
                            Severity::Critical,
                            "was disabled",
                        )
                    }
                };
                if let Some(kind) = kind {
                    let mut raise = Raise::new(
                        kind,
                        w.source(),
                        severity,
                        format!(
                            "watcher {} ({}) {what}: {} polls in a row failed; the last: {why}. Fix the source, then `shepherd watcher enable {}`",
                            w.spec.name, w.id, w.consecutive_errors, w.id
                        ),
                    );
                    raise.account = Some(w.spec.account.clone());
                    if let Err(e) = self.ports.alarms.raise(&raise, now).await {
                        tracing::error!(watcher = %w.id, error = %e, "could not raise the watcher's alarm");
                    }
                }
                if step == AfterError::Disable {
                    self.watcher_audit(
                        &w,
                        AuditKind::WatcherDisabled,
                        Outcome::Failure,
                        "disabled after failing",
                        &Actor(w.source()),
                    )
                    .await;
                }
            }
        }
        w.version += 1;
        w.stats = Default::default();
        if !self.ports.intake.commit_watcher(&w).await? {
            return Ok(None);
        }
        Ok(Some(tick))
    }

    fn polled_ok(&self, w: &mut Watcher, now: Millis) {
        w.consecutive_errors = 0;
        w.last_error = None;
        w.last_success_at = Some(now);
    }

    /// What a pipeline crate's kind declares, for a watcher of that kind (`None` for the
    /// shipped kinds).
    pub(crate) fn declared(&self, w: &Watcher) -> Result<Option<&DeclaredKind>, String> {
        match w.spec.source_kind() {
            SourceKind::Custom => Ok(Some(self.pipelines.watch_kind(&w.spec.kind)?)),
            _ => Ok(None),
        }
    }

    /// Asks the watcher's source what it holds now.
    async fn poll(&self, w: &Watcher) -> Result<Poll, String> {
        let fetch = self.ports.fetch.as_ref();
        match w.spec.source_kind() {
            SourceKind::Feed => {
                let url = w.spec.url.as_deref().unwrap_or_default();
                let accept = (
                    "accept",
                    "application/atom+xml, application/rss+xml, application/xml;q=0.9, */*;q=0.1"
                        .to_string(),
                );
                let res = WatchContext::new(&Value::Null, w.cursor.etag.as_deref(), fetch)
                    .get(url, &[accept])
                    .await?;
                match res.status {
                    304 => Ok(Poll::Unchanged),
                    200..=299 => Ok(Poll::Items {
                        items: watch::feed_entries(&res.body)?,
                        etag: res.header("etag").map(String::from),
                    }),
                    s => Err(format!("the feed answered {s}")),
                }
            }
            SourceKind::GithubIssues => self.poll_issues(w).await,
            _ => {
                self.pipelines.watch_kind(&w.spec.kind)?;
                let code = self.watch_code.get(&w.spec.kind).ok_or_else(|| {
                    format!(
                        "kind {} is not compiled into this process: the stack's scheduler polls it",
                        w.spec.kind
                    )
                })?;
                let params = w.spec.params.clone().unwrap_or_default();
                let ctx = WatchContext::new(&params, w.cursor.etag.as_deref(), fetch);
                code.poll(&ctx).await
            }
        }
    }

    async fn poll_issues(&self, w: &Watcher) -> Result<Poll, String> {
        let (base, token) = self.scm_for(&w.spec.account).await?;
        let mut headers: Vec<(&str, String)> = Vec::new();
        if let Some(tag) = &w.cursor.etag {
            headers.push(("if-none-match", tag.clone()));
        }
        headers.push(("authorization", format!("Bearer {token}")));
        headers.push(("accept", "application/vnd.github+json".into()));
        headers.push(("x-github-api-version", "2022-11-28".into()));
        let repo = w.spec.repository.as_deref().unwrap_or_default();
        let label: String = url::form_urlencoded::byte_serialize(
            w.spec.label.as_deref().unwrap_or_default().as_bytes(),
        )
        .collect();
        let mut url = format!(
            "{}/repos/{repo}/issues?labels={label}&state=open&per_page=100",
            base.trim_end_matches('/')
        );
        let mut items = Vec::new();
        let mut etag = None;
        for page in 0..PAGES {
            let res = self.ports.fetch.get(&url, &headers).await?;
            let limited = res.header("x-ratelimit-remaining") == Some("0");
            match res.status {
                304 if page == 0 => return Ok(Poll::Unchanged),
                200 => {}
                403 | 429 if limited => {
                    let reset = res
                        .header("x-ratelimit-reset")
                        .and_then(|r| r.parse::<Millis>().ok())
                        .map(|s| s * 1000)
                        .unwrap_or_else(|| self.ports.clock.now() + 60_000);
                    return Ok(Poll::Limited(reset));
                }
                s => {
                    let said =
                        crate::domain::redact::excerpt(&String::from_utf8_lossy(&res.body), 200);
                    return Err(format!("{repo}'s issues answered {s}: {said}"));
                }
            }
            if page == 0 {
                etag = res.header("etag").map(String::from);
                // Later pages are not conditional.
                headers.retain(|(k, _)| *k != "if-none-match");
            }
            items.extend(watch::github_issues(&res.body, repo)?);
            match res.header("link").and_then(watch::next_link) {
                Some(next) => url = next,
                None => break,
            }
        }
        Ok(Poll::Items { items, etag })
    }

    /// The source-control host's API and the token for `account`: the account's own, or
    /// the stack's (its integration registry's `scm`).
    async fn scm_for(&self, account: &str) -> Result<(String, String), String> {
        let text = self
            .ports
            .params
            .get(&self.stack.integrations_param)
            .await
            .map_err(|e| format!("the integration registry: {e}"))?;
        let registry = crate::config::Registry::parse(&self.stack.integrations_param, &text)?;
        let scm = registry
            .integrations
            .get("scm")
            .filter(|d| !d.base_url.is_empty())
            .ok_or("the stack has no source-control host (deploy with ScmBaseUrl)")?;
        let access = self
            .ports
            .accounts
            .access(account)
            .await
            .map_err(|e| e.to_string())?;
        let param = access
            .scm_token_param
            .unwrap_or_else(|| scm.secret_param.clone());
        let token = self
            .ports
            .params
            .get(&param)
            .await
            .map_err(|e| format!("the source-control token: {e}"))?;
        Ok((scm.base_url.clone(), token))
    }

    async fn watcher_audit(
        &self,
        w: &Watcher,
        kind: AuditKind,
        outcome: Outcome,
        what: &str,
        actor: &Actor,
    ) {
        let detail = format!(
            "watcher {} ({}, {}): {what}",
            w.id, w.spec.name, w.spec.kind
        );
        self.source_audit(
            &format!("WATCH#{}", w.id),
            &w.spec.account,
            kind,
            None,
            &detail,
            outcome,
            actor,
        )
        .await;
    }
}

impl<'a> Source<'a> {
    pub(crate) fn of_watcher(w: &'a Watcher, declared: Option<&'a DeclaredKind>) -> Self {
        Self {
            name: w.source(),
            account: &w.spec.account,
            kind: w.spec.source_kind(),
            declared,
            pipeline: w.spec.pipeline.as_deref(),
            mapping: &w.spec.mapping,
            when: &w.spec.when,
            events: None,
            window: w.spec.dedupe_window_seconds as Millis * 1000,
        }
    }
}
