//! Operators and integrations: list with health, enable or disable, test.

use serde::Serialize;

use super::{Ops, OpsError};
use crate::config::{CallKind, Registry};
use crate::domain::authz::Permission;
use crate::domain::health::{Health, HealthStatus};
use crate::domain::input;
use crate::domain::{AuditKind, Caller};
use crate::ports::{ParamError, StoreError};

/// One integration as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct IntegrationView {
    pub id: String,
    /// Place in the model-selection chain (0: tried first).
    pub position: usize,
    pub base_url: String,
    pub secret_param: String,
    pub kinds: Vec<CallKind>,
    pub status: HealthStatus,
    pub health: Health,
}

/// What `integrations test` found.
#[derive(Debug, Clone, Serialize)]
pub struct IntegrationTest {
    pub id: String,
    pub secret: String,
    pub reachable: String,
    pub ok: bool,
}

impl Ops {
    async fn registry(&self) -> Result<Registry, OpsError> {
        let name = &self.stack.integrations_param;
        if name.is_empty() {
            return Err(OpsError::Config(
                "the stack configuration names no integration registry (redeploy the template)"
                    .into(),
            ));
        }
        crate::integrations::load_registry(self.ports.params.as_ref(), name)
            .await
            .map_err(|e| OpsError::Config(e.detail))
    }

    /// Every configured integration in chain order, with its health.
    pub async fn integrations(&self, caller: &Caller) -> Result<Vec<IntegrationView>, OpsError> {
        caller.may(Permission::Read)?;
        let registry = self.registry().await?;
        let now = self.ports.clock.now();
        let mut out = Vec::new();
        for (position, (id, d)) in registry.configured().into_iter().enumerate() {
            let health = self.ports.health.get(id).await?;
            out.push(IntegrationView {
                id: id.to_string(),
                position,
                base_url: d.base_url.clone(),
                secret_param: d.secret_param.clone(),
                kinds: d.kinds.clone(),
                status: health.status(now),
                health,
            });
        }
        Ok(out)
    }

    async fn integration(&self, id: &str, caller: &Caller) -> Result<IntegrationView, OpsError> {
        self.integrations(caller)
            .await?
            .into_iter()
            .find(|i| i.id == id)
            .ok_or_else(|| OpsError::NotFound(format!("integration {id}")))
    }

    /// Disables (never called until enabled) or enables an integration; audited.
    pub async fn set_integration_enabled(
        &self,
        id: &str,
        enabled: bool,
        reason: &str,
        caller: &Caller,
    ) -> Result<IntegrationView, OpsError> {
        caller.may(Permission::SwitchIntegration)?;
        input::id("integration id", id).map_err(OpsError::Invalid)?;
        if !enabled && reason.trim().is_empty() {
            return Err(OpsError::Invalid("disabling needs a reason".into()));
        }
        if !enabled {
            input::text("reason", reason, 500).map_err(OpsError::Invalid)?;
        }
        self.integration(id, caller).await?;
        let now = self.ports.clock.now();
        for _ in 0..3 {
            let current = self.ports.health.get(id).await?;
            let mut next = current.clone();
            next.disabled = !enabled;
            if enabled {
                // An operator's "go" also ends a provider's rate-limit wait.
                next.rate_limit_resets_at = None;
            }
            next.disabled_reason =
                (!enabled).then(|| crate::domain::redact::redact(reason.trim()).text);
            next.updated_at = now;
            next.version = current.version + 1;
            if self.ports.health.put(&next).await? {
                let (kind, detail) = if enabled {
                    (AuditKind::IntegrationEnabled, format!("{id} enabled"))
                } else {
                    (
                        AuditKind::IntegrationDisabled,
                        format!("{id} disabled: {}", reason.trim()),
                    )
                };
                self.audit_row(&format!("INT#{id}"), kind, &detail, None, caller)
                    .await?;
                return self.integration(id, caller).await;
            }
        }
        Err(OpsError::Store(StoreError::Unavailable(format!(
            "integration {id} kept changing; try again"
        ))))
    }

    /// Checks that the integration's secret exists and that its base URL answers with it.
    /// Never shows the secret.
    pub async fn test_integration(
        &self,
        id: &str,
        caller: &Caller,
    ) -> Result<IntegrationTest, OpsError> {
        caller.may(Permission::TestIntegration)?;
        let i = self.integration(id, caller).await?;
        match self.ports.params.get(&i.secret_param).await {
            Ok(_) => {}
            Err(ParamError::Missing(n)) => {
                return Ok(IntegrationTest {
                    id: id.into(),
                    secret: format!("missing: SSM parameter {n} does not exist"),
                    reachable: "not tried".into(),
                    ok: false,
                });
            }
            Err(e) => return Err(OpsError::Config(e.to_string())),
        }
        let registry = self.registry().await?;
        let def = registry
            .integrations
            .get(id)
            .ok_or_else(|| OpsError::NotFound(format!("integration {id}")))?;
        let (reachable, ok) = self.ports.connector.provider(id, def).probe().await;
        Ok(IntegrationTest {
            id: id.into(),
            secret: format!("present in {}", i.secret_param),
            reachable,
            ok,
        })
    }
}
