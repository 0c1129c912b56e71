//! Alarms for operators: the ones in the caller's scope; acknowledge or resolve one.

use super::{Ops, OpsError};
use crate::domain::Caller;
use crate::domain::alarms::{Alarm, AlarmStatus};
use crate::domain::authz::Permission;

impl Ops {
    /// The alarms the caller may see, newest first: those about the caller's productions,
    /// and those about no production (a queue, an integration) for admins.
    pub async fn alarms(&self, caller: &Caller) -> Result<Vec<Alarm>, OpsError> {
        caller.may(Permission::Read)?;
        let mut out = Vec::new();
        for a in self.ports.alarms.list().await? {
            if caller.sees(self.owner(&a.subject).await?.as_deref()) {
                out.push(a);
            }
        }
        Ok(out)
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
