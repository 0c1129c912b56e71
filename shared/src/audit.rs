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
