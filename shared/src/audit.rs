//! The audit trail. Each state write carries its audit events in the hot item, so the audit
//! is atomic with the change at no extra write; the state table's stream delivers every
//! write, and [`project`] (the audit projector's handler, in Lambda and in the local
//! runtime alike) appends its events to the append-only audit table and keeps each
//! account's concurrency slots true to the writes.

use crate::domain::limits::holds_slot;
use crate::ports::{Accounts, AuditLog, StoreError};
pub use crate::ports::{AuditQuery, AuditRecord, CommittedWrite};

/// What one projection did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Projected {
    pub events: usize,
    pub slots: usize,
}

/// Appends the writes' events to the audit log, then settles slots: a write that leaves a
/// production in a status without a slot releases it; a retry, redrive or override that
/// brings it back to work takes it again. Both are idempotent set operations, so a
/// replayed stream record changes nothing. An error leaves the batch to be retried whole.
pub async fn project(
    log: &dyn AuditLog,
    accounts: &dyn Accounts,
    writes: &[CommittedWrite],
) -> Result<Projected, StoreError> {
    let events = log.append(writes).await?;
    let mut slots = 0;
    for w in writes {
        let Some(status) = w.status else { continue };
        let hold = holds_slot(status);
        let revived = w.events.iter().any(|e| e.kind.revives());
        if hold && !revived {
            continue;
        }
        accounts
            .hold_slot(&w.account, &w.production_id, hold)
            .await?;
        slots += 1;
    }
    Ok(Projected { events, slots })
}

/// How far a projection in stream order got.
#[derive(Debug)]
pub struct InOrder {
    pub projected: Projected,
    /// The first write that could not be projected (its index in the batch) and why; the
    /// writes before it are projected, none after it.
    pub failed: Option<(usize, StoreError)>,
}

/// Projects `writes` as a stream consumer must: all at once, or, when that fails, one by
/// one in order up to the first that fails, so one record that cannot be written holds
/// back only itself and what follows it (the stream mapping retries from it, then gives
/// it to its on-failure destination). Appends are idempotent, so a write projected twice
/// changes nothing.
pub async fn project_in_order(
    log: &dyn AuditLog,
    accounts: &dyn Accounts,
    writes: &[CommittedWrite],
) -> InOrder {
    if let Ok(projected) = project(log, accounts, writes).await {
        return InOrder {
            projected,
            failed: None,
        };
    }
    let mut done = Projected::default();
    for (i, w) in writes.iter().enumerate() {
        match project(log, accounts, std::slice::from_ref(w)).await {
            Ok(p) => {
                done.events += p.events;
                done.slots += p.slots;
            }
            Err(e) => {
                return InOrder {
                    projected: done,
                    failed: Some((i, e)),
                };
            }
        }
    }
    InOrder {
        projected: done,
        failed: None,
    }
}
