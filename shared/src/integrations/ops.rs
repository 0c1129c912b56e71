//! Operators and integrations: list with health, enable or disable, test.

use serde::Serialize;

use super::{CallKind, Health, HealthStatus, Registry};
use crate::ops::{Ops, OpsError, Role};
use crate::ports::{Actor, ParamError};

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
        let (Some(params), name) = (&self.params, &self.stack.integrations_param) else {
            return Err(OpsError::Config("no SSM client configured".into()));
        };
        if name.is_empty() {
            return Err(OpsError::Config(
                "the stack configuration names no integration registry (redeploy the template)"
                    .into(),
            ));
        }
        let text = params
            .get(name)
            .await
            .map_err(|e| OpsError::Config(e.to_string()))?;
        Registry::parse(name, &text).map_err(OpsError::Config)
    }

    /// Every configured integration in chain order, with its health.
    pub async fn integrations(&self) -> Result<Vec<IntegrationView>, OpsError> {
        let registry = self.registry().await?;
        let now = self.clock.now();
        let mut out = Vec::new();
        for (position, (id, d)) in registry.configured().into_iter().enumerate() {
            let health = self.store.health(id).await?;
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

    async fn integration(&self, id: &str) -> Result<IntegrationView, OpsError> {
        self.integrations()
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
        actor: &Actor,
        role: Role,
    ) -> Result<IntegrationView, OpsError> {
        if role < Role::Operator {
            return Err(OpsError::Forbidden(
                "enabling or disabling an integration needs the Operator role".into(),
            ));
        }
        if !enabled && reason.trim().is_empty() {
            return Err(OpsError::Invalid("disabling needs a reason".into()));
        }
        self.integration(id).await?;
        let now = self.clock.now();
        for _ in 0..3 {
            let current = self.store.health(id).await?;
            let mut next = current.clone();
            next.disabled = !enabled;
            next.disabled_reason = (!enabled).then(|| crate::redact::redact(reason.trim()).text);
            next.updated_at = now;
            next.version = current.version + 1;
            if self.store.put_health(&next).await? {
                let (et, detail) = if enabled {
                    ("integration.enabled", format!("{id} enabled"))
                } else {
                    (
                        "integration.disabled",
                        format!("{id} disabled: {}", reason.trim()),
                    )
                };
                self.audit_row(&format!("INT#{id}"), et, &detail, None, actor)
                    .await?;
                return self.integration(id).await;
            }
        }
        Err(OpsError::Store(crate::ports::StoreError::Unavailable(
            format!("integration {id} kept changing; try again"),
        )))
    }

    /// Checks that the integration's secret exists and that its base URL answers with it.
    /// Never shows the secret.
    pub async fn test_integration(&self, id: &str) -> Result<IntegrationTest, OpsError> {
        let i = self.integration(id).await?;
        let params = self
            .params
            .as_ref()
            .ok_or_else(|| OpsError::Config("no SSM client configured".into()))?;
        let key = match params.get(&i.secret_param).await {
            Ok(k) => k,
            Err(ParamError::Missing(n)) => {
                return Ok(IntegrationTest {
                    id: id.into(),
                    secret: format!("missing: SSM parameter {n} does not exist"),
                    reachable: "not tried".into(),
                    ok: false,
                });
            }
            Err(e) => return Err(OpsError::Config(e.to_string())),
        };
        let url = format!("{}/models", i.base_url.trim_end_matches('/'));
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| OpsError::Config(e.to_string()))?;
        let (reachable, ok) = match client.get(&url).bearer_auth(key).send().await {
            Ok(r) if r.status() == 401 || r.status() == 403 => (
                format!(
                    "{url} refused the key in {} ({})",
                    i.secret_param,
                    r.status()
                ),
                false,
            ),
            Ok(r) if r.status().is_server_error() => {
                (format!("{url} answered {}", r.status()), false)
            }
            Ok(r) => (format!("{url} answered {}", r.status()), true),
            Err(e) => (format!("{url} unreachable: {e}"), false),
        };
        Ok(IntegrationTest {
            id: id.into(),
            secret: format!("present in {}", i.secret_param),
            reachable,
            ok,
        })
    }
}
