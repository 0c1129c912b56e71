//! Audit queries for operators, scoped to what the caller may see.

use super::{Ops, OpsError};
use crate::domain::Caller;
use crate::ports::{AuditQuery, AuditRecord};

impl Ops {
    /// Audit events, oldest first: a production's (not found unless the caller sees it),
    /// a trace's, or one type's in a window, keeping the events of the caller's scope.
    pub async fn audit(
        &self,
        q: &AuditQuery,
        limit: usize,
        caller: &Caller,
    ) -> Result<Vec<AuditRecord>, OpsError> {
        if let AuditQuery::Production(id) = q {
            self.get(id, caller).await?;
        }
        let rows = self.ports.audit.query(q, limit).await?;
        Ok(rows
            .into_iter()
            .filter(|r| caller.sees(r.account.as_deref()))
            .collect())
    }
}
