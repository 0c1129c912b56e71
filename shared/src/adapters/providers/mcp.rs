//! An MCP client over streamable HTTP: `initialize` once per session, then `tools/call`.
//! Answers may come as JSON or as an event stream; both are read. A broken connection or
//! stream is a transport failure (`mcp_transport`): the caller cannot know whether the
//! tool ran, so it treats the outcome as unknown and calls again under the same key.
//!
//! Written here rather than with `rmcp`'s client: three JSON-RPC messages do not need its
//! session worker, and its transport resumes broken streams on its own, which would hide
//! exactly the failure Shepherd must record. The local stack's server is `rmcp`'s, so the
//! two are tested against each other.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use async_trait::async_trait;

use crate::domain::{ErrorCode, StepError};
use crate::ports::{McpSession, Params};

const PROTOCOL: &str = "2025-06-18";

#[derive(Debug, Clone)]
struct Session {
    id: Option<String>,
    protocol: String,
}

/// One MCP server (an integration of kind `mcp`), its bearer token an SSM SecureString.
pub struct McpClient {
    url: String,
    secret_param: String,
    params: Arc<dyn Params>,
    timeout: Duration,
    http: std::sync::OnceLock<reqwest::Client>,
    session: tokio::sync::Mutex<Option<Session>>,
    next_id: AtomicU64,
}

fn transport(detail: impl std::fmt::Display) -> StepError {
    StepError::retryable(ErrorCode::McpTransport, detail.to_string())
}

impl McpClient {
    pub fn new(
        url: impl Into<String>,
        secret_param: impl Into<String>,
        params: Arc<dyn Params>,
        timeout: Duration,
    ) -> Self {
        Self {
            url: url.into(),
            secret_param: secret_param.into(),
            params,
            timeout,
            http: std::sync::OnceLock::new(),
            session: tokio::sync::Mutex::new(None),
            next_id: AtomicU64::new(1),
        }
    }

    fn http(&self) -> &reqwest::Client {
        self.http.get_or_init(|| super::http_client(self.timeout))
    }

    async fn token(&self) -> Result<String, StepError> {
        super::secret(
            self.params.as_ref(),
            &self.secret_param,
            " (the MCP server's token)",
        )
        .await
    }

    /// One JSON-RPC message; the answer to a request (`None` for a notification).
    async fn send(
        &self,
        session: Option<&Session>,
        msg: Value,
    ) -> Result<Option<Value>, StepError> {
        let mut req = self
            .http()
            .post(&self.url)
            .bearer_auth(self.token().await?)
            .header("accept", "application/json, text/event-stream")
            .json(&msg);
        if let Some(s) = session {
            req = req.header("mcp-protocol-version", &s.protocol);
            if let Some(id) = &s.id {
                req = req.header("mcp-session-id", id);
            }
        }
        let res = req.send().await.map_err(transport)?;
        let status = res.status();
        if status == reqwest::StatusCode::NOT_FOUND && session.is_some_and(|s| s.id.is_some()) {
            return Err(StepError::retryable(
                ErrorCode::McpSessionExpired,
                "the MCP server no longer knows the session",
            ));
        }
        if status.as_u16() == 401 || status.as_u16() == 403 {
            return Err(StepError::permanent(
                ErrorCode::ProviderAuth,
                format!("the MCP server refused the token in {}", self.secret_param),
            ));
        }
        if !status.is_success() {
            let mut e = if status.is_server_error() {
                StepError::retryable(
                    ErrorCode::ProviderUnavailable,
                    format!("MCP server answered {status}"),
                )
            } else {
                StepError::permanent(
                    ErrorCode::McpRejected,
                    format!("MCP server answered {status}"),
                )
            };
            e.provider_status = Some(status.as_u16());
            return Err(e);
        }
        let Some(id) = msg.get("id").cloned() else {
            return Ok(None);
        };
        let session_id = res
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let is_stream = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream"));
        // A body cut off mid-way is the transport failure that matters most.
        let text =
            super::read_text_capped(res, super::JSON_ANSWER_CAP, &self.url, transport).await?;
        let messages: Vec<Value> = if is_stream {
            text.split("\n\n")
                .filter_map(|event| {
                    let data: Vec<&str> = event
                        .lines()
                        .filter_map(|l| l.strip_prefix("data:"))
                        .map(str::trim_start)
                        .collect();
                    serde_json::from_str(&data.join("\n")).ok()
                })
                .collect()
        } else {
            serde_json::from_str(&text).into_iter().collect()
        };
        let mut answer = messages
            .into_iter()
            .find(|m| m.get("id") == Some(&id))
            .ok_or_else(|| transport("the answer ended before the result arrived"))?;
        if let Some(sid) = session_id {
            answer["_session"] = sid.into();
        }
        Ok(Some(answer))
    }

    async fn request(
        &self,
        session: Option<&Session>,
        method: &str,
        params: Value,
    ) -> Result<Value, StepError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let mut answer = self
            .send(session, msg)
            .await?
            .ok_or_else(|| transport("no answer"))?;
        if let Some(err) = answer.get("error") {
            return Err(StepError::permanent(
                ErrorCode::McpError,
                format!(
                    "{method}: {}",
                    err["message"].as_str().unwrap_or("error without a message")
                ),
            ));
        }
        let session_id = answer.get("_session").cloned();
        // A JSON-RPC result is the server's to shape; MCP's are objects. Anything else is a
        // bad answer, never a reason to panic.
        let mut result = match answer.get_mut("result").map(Value::take) {
            Some(Value::Object(m)) => Value::Object(m),
            other => {
                return Err(StepError::permanent(
                    ErrorCode::ProviderBadResponse,
                    format!(
                        "{method}: the MCP server's result is not an object ({})",
                        match other {
                            None => "none",
                            Some(Value::Null) => "null",
                            Some(Value::Array(_)) => "an array",
                            Some(Value::String(_)) => "a string",
                            Some(_) => "a scalar",
                        }
                    ),
                ));
            }
        };
        if let Some(sid) = session_id {
            result["_session"] = sid;
        }
        Ok(result)
    }

    async fn connect(&self) -> Result<Session, StepError> {
        let init = self
            .request(
                None,
                "initialize",
                json!({
                    "protocolVersion": PROTOCOL,
                    "capabilities": {},
                    "clientInfo": {"name": "shepherd", "version": env!("CARGO_PKG_VERSION")}
                }),
            )
            .await?;
        let session = Session {
            id: init["_session"].as_str().map(String::from),
            protocol: init["protocolVersion"]
                .as_str()
                .unwrap_or(PROTOCOL)
                .to_string(),
        };
        self.send(
            Some(&session),
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        )
        .await?;
        Ok(session)
    }
}

#[async_trait]
impl McpSession for McpClient {
    async fn disconnect(&self) {
        *self.session.lock().await = None;
    }

    async fn call_tool(&self, name: &str, arguments: &Value) -> Result<Value, StepError> {
        let session = {
            let mut current = self.session.lock().await;
            match current.as_ref() {
                Some(s) => s.clone(),
                None => {
                    let s = self.connect().await?;
                    *current = Some(s.clone());
                    s
                }
            }
        };
        let result = match self
            .request(
                Some(&session),
                "tools/call",
                json!({"name": name, "arguments": arguments}),
            )
            .await
        {
            Err(e) if e.code == ErrorCode::McpSessionExpired => {
                self.disconnect().await;
                return Err(e);
            }
            other => other?,
        };
        let text = result["content"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n");
        if result["isError"].as_bool() == Some(true) {
            return Err(StepError::permanent(
                ErrorCode::McpToolFailed,
                format!("{name}: {}", crate::domain::redact::excerpt(&text, 300)),
            ));
        }
        Ok(match result.get("structuredContent") {
            Some(v) if !v.is_null() => v.clone(),
            _ => serde_json::from_str(&text).unwrap_or(Value::String(text)),
        })
    }
}
