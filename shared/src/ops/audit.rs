//! Audit queries for operators, scoped to what the caller may see.

use serde::Serialize;
use tracing::warn;

use super::{Ops, OpsError};
use crate::domain::Caller;
use crate::domain::authz::Permission;
use crate::domain::input;
use crate::ports::{AuditQuery, AuditRecord, Page};

/// What `audit redrive` did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRedrive {
    /// Failure reports read from the projector's failure queue.
    pub reports: usize,
    /// Committed writes projected again.
    pub writes: usize,
    pub events: usize,
    /// Reports left in the queue (their records could not be read or written yet).
    pub left: usize,
}

impl Ops {
    /// Audit events, oldest first: a production's (not found unless the caller sees it),
    /// a trace's, or one type's in a window, keeping the events of the caller's scope.
    pub async fn audit(
        &self,
        q: &AuditQuery,
        limit: usize,
        after: Option<&str>,
        caller: &Caller,
    ) -> Result<Page<AuditRecord>, OpsError> {
        let bad = OpsError::Invalid;
        input::count("limit", limit, 1000).map_err(bad)?;
        let mut q = q.clone();
        match &mut q {
            AuditQuery::Production(id) => {
                self.get(id, caller).await?;
            }
            AuditQuery::Trace(t) => input::id("trace", t).map_err(bad)?,
            AuditQuery::Type {
                event_type,
                since,
                until,
                account,
            } => {
                input::id("type", event_type).map_err(bad)?;
                input::instant("since", *since).map_err(bad)?;
                input::instant("until", *until).map_err(bad)?;
                if since >= until {
                    return Err(OpsError::Invalid("since must be before until".into()));
                }
                // An account's callers read their own account's events of a type by key:
                // another account's volume neither costs them reads nor crowds out theirs.
                if let Some(mine) = caller.account() {
                    *account = Some(mine.to_string());
                }
            }
        }
        let mut page = self.ports.audit.query(&q, limit, after).await?;
        page.items.retain(|r| caller.sees(r.account.as_deref()));
        Ok(page)
    }

    /// Projects again the stream records the audit projector gave up on: each report in its
    /// failure queue names a shard and a sequence range, read again from the stream (it keeps
    /// them 24 hours) and appended (idempotently); a report is deleted once its records are.
    /// Stack operators only: the records belong to every account.
    pub async fn redrive_audit(&self, caller: &Caller) -> Result<AuditRedrive, OpsError> {
        caller.may(Permission::RedriveAudit)?;
        let queue = &self.stack.projector_failures;
        if queue.is_empty() {
            return Err(OpsError::Config(
                "the stack configuration names no projector failure queue (redeploy the template)"
                    .into(),
            ));
        }
        let mut report = AuditRedrive::default();
        loop {
            let msgs = self
                .ports
                .queue
                .receive(queue, 10, 60)
                .await
                .map_err(|e| OpsError::Config(e.to_string()))?;
            if msgs.is_empty() {
                return Ok(report);
            }
            for m in msgs {
                report.reports += 1;
                match self.project_report(&m.body).await {
                    Ok((writes, events)) => {
                        report.writes += writes;
                        report.events += events;
                        self.ports
                            .queue
                            .delete(queue, &m.receipt)
                            .await
                            .map_err(|e| OpsError::Config(e.to_string()))?;
                    }
                    Err(e) => {
                        warn!(error = %e, "a projector failure report could not be redriven; it stays");
                        report.left += 1;
                    }
                }
            }
            if report.left > 0 {
                return Ok(report);
            }
        }
    }

    async fn project_report(&self, body: &str) -> Result<(usize, usize), OpsError> {
        let v: serde_json::Value = serde_json::from_str(body)
            .map_err(|e| OpsError::Invalid(format!("not an on-failure record: {e}")))?;
        let info = &v["DDBStreamBatchInfo"];
        let field = |k: &str| {
            info[k].as_str().map(String::from).ok_or_else(|| {
                OpsError::Invalid(format!(
                    "the on-failure record has no DDBStreamBatchInfo.{k}"
                ))
            })
        };
        let stream = info["streamArn"]
            .as_str()
            .unwrap_or(&self.stack.state_stream)
            .to_string();
        let writes = self
            .ports
            .stream
            .writes(
                &stream,
                &field("shardId")?,
                &field("startSequenceNumber")?,
                &field("endSequenceNumber")?,
            )
            .await?;
        let done = crate::audit::project(
            self.ports.audit.as_ref(),
            self.ports.accounts.as_ref(),
            &writes,
        )
        .await?;
        Ok((writes.len(), done.events))
    }
}
