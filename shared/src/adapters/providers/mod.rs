//! Outbound adapters to the providers phases call: OpenAI-compatible APIs (chat, images,
//! speech) and generic HTTP JSON endpoints (`openai.rs`), and MCP servers over streamable
//! HTTP (`mcp.rs`), and source-control hosts with GitHub's REST API (`github.rs`).
//! [`HttpConnector`] makes one client per integration of the registry.

mod github;
mod mcp;
mod openai;

use std::sync::Arc;
use std::time::Duration;

pub use github::GitHubClient;
pub use mcp::McpClient;
pub use openai::ProviderClient;

use crate::config::Definition;
use crate::domain::{ErrorCode, StepError};
use crate::ports::{Clock, Connector, McpSession, ParamError, Params, Provider, Scm};

/// The HTTP client every outside call uses: the call's timeout, connecting within 5 s.
/// Built on first use (loading the TLS roots costs cold start).
pub(crate) fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5).min(timeout))
        .build()
        .expect("HTTP client builds")
}

/// A secret from SSM; a missing one fails permanently naming the parameter, never a value.
async fn secret(params: &dyn Params, name: &str, what: &str) -> Result<String, StepError> {
    params.get(name).await.map_err(|e| match e {
        ParamError::Missing(n) => StepError::permanent(
            ErrorCode::ConfigMissing,
            format!("SSM parameter {n}{what} does not exist"),
        ),
        other => StepError::retryable(ErrorCode::ConfigUnavailable, other.to_string()),
    })
}

/// Makes HTTP clients for the registry's integrations, their secrets read through `params`.
pub struct HttpConnector {
    pub params: Arc<dyn Params>,
    pub clock: Arc<dyn Clock>,
    pub timeout: Duration,
}

impl Connector for HttpConnector {
    fn provider(&self, _id: &str, d: &Definition) -> Arc<dyn Provider> {
        Arc::new(ProviderClient::new(
            self.params.clone(),
            self.clock.clone(),
            d.base_url.clone(),
            d.secret_param.clone(),
            self.timeout,
        ))
    }

    fn mcp(&self, _id: &str, d: &Definition) -> Arc<dyn McpSession> {
        Arc::new(McpClient::new(
            d.base_url.clone(),
            d.secret_param.clone(),
            self.params.clone(),
            self.timeout,
        ))
    }

    fn scm(&self, _id: &str, d: &Definition) -> Arc<dyn Scm> {
        Arc::new(GitHubClient::new(
            self.params.clone(),
            self.clock.clone(),
            d.base_url.clone(),
            d.secret_param.clone(),
            self.timeout,
        ))
    }
}
