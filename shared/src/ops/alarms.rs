//! Alarms for operators: the ones in the caller's scope; acknowledge or resolve one.

use super::{Ops, OpsError};
use crate::domain::Caller;
use crate::domain::alarms::{Alarm, AlarmStatus};
use crate::domain::authz::Permission;
use crate::domain::input;
use crate::ports::Page;

impl Ops {
    /// The alarms the caller may see, newest first, a page at a time: an account's callers
    /// see those about their productions (read by key, one item per alarm returned); the
    /// stack's operators see every alarm, or one account's with `account`.
    pub async fn alarms(
        &self,
        account: Option<&str>,
        limit: usize,
        after: Option<&str>,
        caller: &Caller,
    ) -> Result<Page<Alarm>, OpsError> {
        caller.may(Permission::Read)?;
        input::count("limit", limit, 1000).map_err(OpsError::Invalid)?;
        let scope = match caller.account() {
            Some(mine) => Some(mine),
            None => account,
        };
        if let Some(a) = scope {
            input::id("account", a).map_err(OpsError::Invalid)?;
        }
        Ok(self.ports.alarms.list(scope, limit, after).await?)
    }

    /// Acknowledges or resolves an alarm (`<type>#<subject>`); one the caller may not see
    /// is not found.
    pub async fn set_alarm(
        &self,
        id: &str,
        status: AlarmStatus,
        caller: &Caller,
    ) -> Result<(), OpsError> {
        let subject = id.split_once('#').map(|(_, s)| s).unwrap_or_default();
        if !caller.sees(self.owner(subject).await?.as_deref()) {
            return Err(OpsError::NotFound(format!("alarm {id}")));
        }
        caller.may(Permission::HandleAlarm)?;
        let now = self.ports.clock.now();
        if self
            .ports
            .alarms
            .set_status(id, status, &caller.actor, now)
            .await?
        {
            Ok(())
        } else {
            Err(OpsError::NotFound(format!("alarm {id}")))
        }
    }
}
