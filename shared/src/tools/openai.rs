//! An OpenAI-compatible provider: chat completions, image generation, speech.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::StepError;
use crate::ports::{Clock, ParamError, Params};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: "system".into(),
            content: content.into(),
        }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: "user".into(),
            content: content.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageRequest {
    pub model: String,
    pub prompt: String,
    pub n: u32,
    pub size: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageResult {
    pub url: String,
    /// Flags the provider raised on the image (`copyright_risk`, `attribution_required`,
    /// `low_safety_score`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SpeechRequest {
    pub model: String,
    pub input: String,
    pub voice: String,
    pub response_format: String,
}

/// Audio is not kept in the state table; its size and digest are (storage is the team's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpeechResult {
    pub bytes: usize,
    pub sha256: String,
    pub format: String,
}

/// Calls one OpenAI-compatible provider; its API key is an SSM SecureString, read through
/// the (cached) parameters and refreshed once on an authentication error.
pub struct ProviderClient {
    /// Built on first use: loading the TLS roots costs tens of milliseconds of cold start.
    http: std::sync::OnceLock<reqwest::Client>,
    timeout: Duration,
    params: Arc<dyn Params>,
    clock: Arc<dyn Clock>,
    base_url: String,
    api_key_param: String,
}

#[derive(Deserialize)]
struct ChatResponse {
    choices: Vec<ChatChoice>,
}
#[derive(Deserialize)]
struct ChatChoice {
    message: ChatResponseMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}
#[derive(Deserialize)]
struct ChatResponseMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
}
#[derive(Deserialize)]
struct ImageResponse {
    data: Vec<ImageDatum>,
}
#[derive(Deserialize)]
struct ImageDatum {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
    /// Some providers score an image's safety in [0, 1]; below 0.5 is flagged.
    #[serde(default)]
    safety_score: Option<f64>,
}
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}
#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: String,
    #[serde(default)]
    code: Option<String>,
}

impl ProviderClient {
    pub fn new(
        params: Arc<dyn Params>,
        clock: Arc<dyn Clock>,
        base_url: impl Into<String>,
        api_key_param: impl Into<String>,
        timeout: Duration,
    ) -> Self {
        Self {
            http: std::sync::OnceLock::new(),
            timeout,
            params,
            clock,
            base_url: base_url.into(),
            api_key_param: api_key_param.into(),
        }
    }

    pub async fn chat(&self, req: &ChatRequest, key: &str) -> Result<String, StepError> {
        let res: ChatResponse = self.post_json("chat/completions", req, key).await?;
        let choice = res.choices.into_iter().next().ok_or_else(|| {
            StepError::permanent("provider_bad_response", "chat completion had no choices")
        })?;
        if let Some(refusal) = choice.message.refusal {
            return Err(StepError::permanent("content_refused", refusal));
        }
        if choice.finish_reason.as_deref() == Some("content_filter") {
            return Err(StepError::permanent(
                "content_refused",
                "the provider's content filter stopped the completion",
            ));
        }
        choice.message.content.ok_or_else(|| {
            StepError::permanent("provider_bad_response", "chat completion had no content")
        })
    }

    pub async fn image(&self, req: &ImageRequest, key: &str) -> Result<ImageResult, StepError> {
        let res: ImageResponse = self.post_json("images/generations", req, key).await?;
        let datum = res
            .data
            .into_iter()
            .find(|d| d.url.is_some())
            .ok_or_else(|| {
                StepError::permanent(
                    "provider_no_image",
                    "the provider answered without an image (filtered?)",
                )
            })?;
        let mut warnings = datum.warnings;
        if datum.safety_score.is_some_and(|s| s < 0.5) {
            warnings.push("low_safety_score".into());
        }
        Ok(ImageResult {
            url: datum.url.unwrap_or_default(),
            warnings,
        })
    }

    pub async fn speech(&self, req: &SpeechRequest, key: &str) -> Result<SpeechResult, StepError> {
        let body = self
            .post("audio/speech", req, key)
            .await?
            .bytes()
            .await
            .map_err(transport)?;
        Ok(SpeechResult {
            bytes: body.len(),
            sha256: hex::encode(Sha256::digest(&body)),
            format: req.response_format.clone(),
        })
    }

    /// A generic HTTP JSON call: POST `body` to the base URL itself, the JSON answer back.
    pub async fn post_value(
        &self,
        body: &serde_json::Value,
        key: &str,
    ) -> Result<serde_json::Value, StepError> {
        self.post_json("", body, key).await
    }

    async fn post_json<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        req: &impl Serialize,
        key: &str,
    ) -> Result<T, StepError> {
        let res = self.post(path, req, key).await?;
        let text = res.text().await.map_err(transport)?;
        serde_json::from_str(&text)
            .map_err(|e| StepError::permanent("provider_bad_response", format!("{path}: {e}")))
    }

    /// One POST; on 401 the cached key is dropped and the call made once more.
    async fn post(
        &self,
        path: &str,
        req: &impl Serialize,
        key: &str,
    ) -> Result<reqwest::Response, StepError> {
        let base = self.base_url.trim_end_matches('/');
        let url = if path.is_empty() {
            base.to_string()
        } else {
            format!("{base}/{path}")
        };
        for refreshed in [false, true] {
            let api_key = self.param(&self.api_key_param).await?;
            let res = self
                .http()
                .post(&url)
                .bearer_auth(&api_key)
                .header("Idempotency-Key", key)
                .json(req)
                .send()
                .await
                .map_err(transport)?;
            if res.status() == StatusCode::UNAUTHORIZED && !refreshed {
                self.params.invalidate(&self.api_key_param);
                continue;
            }
            return self.check(res).await;
        }
        unreachable!("the loop returns")
    }

    fn http(&self) -> &reqwest::Client {
        self.http.get_or_init(|| super::http_client(self.timeout))
    }

    async fn check(&self, res: reqwest::Response) -> Result<reqwest::Response, StepError> {
        let status = res.status();
        if status.is_success() {
            return Ok(res);
        }
        let header = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        // Retry-After (seconds), else the provider's rate-limit reset headers ("6m0s").
        let retry_after = header("retry-after")
            .and_then(|v| v.trim().parse::<f64>().ok())
            .or_else(|| {
                ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
                    .iter()
                    .filter_map(|h| header(h).as_deref().and_then(reset_secs))
                    .reduce(f64::max)
            });
        let body = res.text().await.unwrap_or_default();
        let parsed: Option<ErrorBody> = serde_json::from_str(&body).ok();
        let message = parsed
            .as_ref()
            .map(|b| b.error.message.clone())
            .unwrap_or_else(|| body.chars().take(200).collect());
        let code = parsed.and_then(|b| b.error.code);
        let mut err = match status.as_u16() {
            429 => {
                let mut e = StepError::retryable("provider_rate_limited", message);
                e.retry_at = retry_after.map(|s| self.clock.now() + (s * 1000.0) as i64);
                e
            }
            408 | 500..=599 => StepError::retryable("provider_unavailable", message),
            401 | 403 => StepError::permanent(
                "provider_auth",
                format!(
                    "the provider refused the key in {}: {message}",
                    self.api_key_param
                ),
            ),
            _ if code.as_deref() == Some("content_policy_violation") => {
                StepError::permanent("content_refused", message)
            }
            _ => StepError::permanent("provider_rejected", message),
        };
        err.provider_status = Some(status.as_u16());
        Err(err)
    }

    async fn param(&self, name: &str) -> Result<String, StepError> {
        self.params.get(name).await.map_err(|e| match e {
            ParamError::Missing(n) => StepError::permanent(
                "config_missing",
                format!("SSM parameter {n} does not exist"),
            ),
            other => StepError::retryable("config_unavailable", other.to_string()),
        })
    }
}

/// A rate-limit reset like `1s`, `6m0s`, `20ms` or `1h2m3.5s`, in seconds.
fn reset_secs(text: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (scale, unit_len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else {
            return None;
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Some(total)
}

fn transport(e: reqwest::Error) -> StepError {
    let code = if e.is_timeout() {
        "provider_timeout"
    } else {
        "provider_unreachable"
    };
    // reqwest's text names the URL, never headers, so no key can leak here.
    StepError::retryable(code, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::reset_secs;

    #[test]
    fn rate_limit_resets_are_read_in_the_providers_format() {
        assert_eq!(reset_secs("1s"), Some(1.0));
        assert_eq!(reset_secs("6m0s"), Some(360.0));
        assert_eq!(reset_secs("20ms"), Some(0.02));
        assert_eq!(reset_secs("1h2m3.5s"), Some(3723.5));
        assert_eq!(reset_secs("soon"), None);
        assert_eq!(reset_secs(""), None);
    }
}
