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

/// The HTTP client every outside call uses: the call's timeout, connecting within 5 s, and
/// no redirect followed (a 3xx is an answer like any other: following one would let an
/// answer point a call at an address the registry never named). Built on first use
/// (loading the TLS roots costs cold start).
pub(crate) fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5).min(timeout))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client builds")
}

/// The largest JSON answer read from a provider, an MCP server or a source-control host.
pub const JSON_ANSWER_CAP: usize = 8 << 20;
/// The largest media answer read (an image fetched from its URL, speech audio).
pub const MEDIA_ANSWER_CAP: usize = 32 << 20;

/// An answer's body, read up to `cap` bytes: a larger one is refused as soon as it is
/// (permanently: asking again brings the same), and never held whole in memory. A body
/// cut off mid-way is `cut`'s error (each client's transport failure).
pub(crate) async fn read_capped(
    mut res: reqwest::Response,
    cap: usize,
    what: &str,
    cut: fn(reqwest::Error) -> StepError,
) -> Result<Vec<u8>, StepError> {
    let too_large = || {
        StepError::permanent(
            ErrorCode::ProviderBadResponse,
            format!("{what}: the answer is larger than {} MB", cap >> 20),
        )
    };
    if res.content_length().is_some_and(|n| n > cap as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(cut)? {
        if body.len() + chunk.len() > cap {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// As [`read_capped`], as text (invalid UTF-8 replaced).
pub(crate) async fn read_text_capped(
    res: reqwest::Response,
    cap: usize,
    what: &str,
    cut: fn(reqwest::Error) -> StepError,
) -> Result<String, StepError> {
    read_capped(res, cap, what, cut)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
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
        let secs = |s: u32| std::time::Duration::from_secs(s.into());
        let client = ProviderClient::new(
            self.params.clone(),
            self.clock.clone(),
            d.base_url.clone(),
            d.secret_param.clone(),
            d.timeout_seconds.map(secs).unwrap_or(self.timeout),
        );
        Arc::new(
            d.timeouts
                .iter()
                .fold(client, |c, (kind, s)| c.with_timeout(*kind, secs(*s))),
        )
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
