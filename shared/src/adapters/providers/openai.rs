//! An OpenAI-compatible provider: chat completions, image generation, speech and moderation,
//! as OpenAI's API reference defines them (and a generic HTTP JSON endpoint).
//!
//! - Images: the GPT image models (`gpt-image-*`) always answer `b64_json` and refuse
//!   `response_format`; DALL-E models are asked for `b64_json` (their URLs expire within an
//!   hour). A `url` answer (a compatible provider's) is downloaded within the same call.
//! - Speech answers audio bytes in the requested `response_format`.
//! - Moderation: an image goes as a `data:` URL in a multi-modal `input`; the answer's
//!   `category_scores` are kept whole (thresholds are ours, `domain::moderation`).
//! - Chat: a `refusal` or `finish_reason: content_filter` is a content refusal.
//! - Errors are `{"error": {message, type, param, code}}`; 429 carries `Retry-After`
//!   (seconds) or the `x-ratelimit-reset-*` headers, except `insufficient_quota`, which no
//!   wait cures. An image request the safety system blocks answers 400 with
//!   `moderation_blocked` (GPT image models) or `content_policy_violation` (DALL-E).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use crate::domain::artifacts::audio_type;
use crate::domain::moderation::Moderation;
use crate::domain::{ErrorCode, StepError};
use crate::ports::{
    Audio, ChatRequest, Clock, GeneratedImage, ImageRequest, Params, Provider, SpeechRequest,
};

/// Calls one OpenAI-compatible provider; its API key is an SSM SecureString, read through
/// the (cached) parameters and refreshed once on an authentication error.
pub struct ProviderClient {
    /// Built on first use: loading the TLS roots costs tens of milliseconds of cold start.
    http: std::sync::OnceLock<reqwest::Client>,
    timeout: Duration,
    /// Request timeouts of kinds sized apart from the rest (an image model's minute).
    timeouts: std::collections::BTreeMap<&'static str, Duration>,
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
    #[serde(default)]
    data: Vec<ImageDatum>,
    /// `png`, `jpeg` or `webp` (GPT image models).
    #[serde(default)]
    output_format: Option<String>,
}
#[derive(Deserialize)]
struct ImageDatum {
    #[serde(default)]
    b64_json: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    revised_prompt: Option<String>,
    /// Not OpenAI's: flags some compatible providers add to an image.
    #[serde(default)]
    warnings: Vec<String>,
    /// Not OpenAI's: some compatible providers score an image's safety in [0, 1]; below
    /// 0.5 is flagged.
    #[serde(default)]
    safety_score: Option<f64>,
}
/// `POST /moderations`'s answer: one result per input.
#[derive(Deserialize)]
struct ModerationResponse {
    model: String,
    results: Vec<ModerationResult>,
}
#[derive(Deserialize)]
struct ModerationResult {
    category_scores: std::collections::BTreeMap<String, f64>,
    #[serde(default)]
    category_applied_input_types: std::collections::BTreeMap<String, Vec<String>>,
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
            timeouts: Default::default(),
            params,
            clock,
            base_url: base_url.into(),
            api_key_param: api_key_param.into(),
        }
    }
}

impl ProviderClient {
    /// Sizes the request timeout of one kind of call apart from the rest.
    pub fn with_timeout(mut self, kind: crate::domain::CallKind, timeout: Duration) -> Self {
        self.timeouts.insert(kind.as_str(), timeout);
        self
    }

    /// The timeout of a request to `path`.
    fn timeout_of(&self, path: &str) -> Duration {
        use crate::domain::CallKind;
        let kind = match path {
            "chat/completions" => CallKind::Chat,
            "images/generations" => CallKind::Image,
            "audio/speech" => CallKind::Speech,
            "moderations" => CallKind::Moderation,
            _ => CallKind::Http,
        };
        self.timeouts
            .get(kind.as_str())
            .copied()
            .unwrap_or(self.timeout)
    }
}

#[async_trait]
impl Provider for ProviderClient {
    async fn chat(&self, req: &ChatRequest, key: &str) -> Result<String, StepError> {
        let res: ChatResponse = self.post_typed("chat/completions", req, key).await?;
        let choice = res.choices.into_iter().next().ok_or_else(|| {
            StepError::permanent(
                ErrorCode::ProviderBadResponse,
                "chat completion had no choices",
            )
        })?;
        if let Some(refusal) = choice.message.refusal {
            return Err(StepError::permanent(ErrorCode::ContentRefused, refusal));
        }
        if choice.finish_reason.as_deref() == Some("content_filter") {
            return Err(StepError::permanent(
                ErrorCode::ContentRefused,
                "the provider's content filter stopped the completion",
            ));
        }
        choice.message.content.ok_or_else(|| {
            StepError::permanent(
                ErrorCode::ProviderBadResponse,
                "chat completion had no content",
            )
        })
    }

    async fn image(&self, req: &ImageRequest, key: &str) -> Result<GeneratedImage, StepError> {
        let res: ImageResponse = self
            .post_typed("images/generations", &image_body(req), key)
            .await?;
        let datum = res
            .data
            .into_iter()
            .find(|d| d.b64_json.is_some() || d.url.is_some())
            .ok_or_else(|| {
                StepError::permanent(
                    ErrorCode::ProviderNoImage,
                    "the provider answered without an image (filtered?)",
                )
            })?;
        let format = res
            .output_format
            .or_else(|| req.output_format.clone())
            .unwrap_or_else(|| "png".into());
        let (bytes, content_type) = match (&datum.b64_json, &datum.url) {
            (Some(b64), _) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|e| {
                        StepError::permanent(
                            ErrorCode::ProviderBadResponse,
                            format!("images/generations: b64_json is not base64: {e}"),
                        )
                    })?;
                (bytes, image_type(&format).to_string())
            }
            (None, Some(url)) => self.download(url).await?,
            (None, None) => unreachable!("found above"),
        };
        let mut warnings = datum.warnings;
        if datum.safety_score.is_some_and(|s| s < 0.5) {
            warnings.push("low_safety_score".into());
        }
        Ok(GeneratedImage {
            bytes,
            content_type,
            revised_prompt: datum.revised_prompt,
            warnings,
        })
    }

    async fn speech(&self, req: &SpeechRequest, key: &str) -> Result<Audio, StepError> {
        let res = self.post("audio/speech", req, key).await?;
        let content_type = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .filter(|t| t.starts_with("audio/"))
            .map(str::to_string)
            .unwrap_or_else(|| audio_type(&req.response_format).to_string());
        let bytes =
            super::read_capped(res, super::MEDIA_ANSWER_CAP, "audio/speech", transport).await?;
        if bytes.is_empty() {
            return Err(StepError::retryable(
                ErrorCode::ProviderBadResponse,
                "audio/speech answered no audio",
            ));
        }
        Ok(Audio {
            bytes: bytes.to_vec(),
            content_type,
        })
    }

    async fn moderate(
        &self,
        model: &str,
        image_url: &str,
        key: &str,
    ) -> Result<Moderation, StepError> {
        let body = serde_json::json!({
            "model": model,
            "input": [{"type": "image_url", "image_url": {"url": image_url}}],
        });
        let res: ModerationResponse = self.post_typed("moderations", &body, key).await?;
        let result = res.results.into_iter().next().ok_or_else(|| {
            StepError::permanent(
                ErrorCode::ProviderBadResponse,
                "moderations: the answer had no result for the image",
            )
        })?;
        Ok(Moderation {
            model: res.model,
            scores: result.category_scores,
            applied: result.category_applied_input_types,
        })
    }

    async fn probe(&self) -> (String, bool) {
        let url = format!("{}/models", self.base_url.trim_end_matches('/'));
        let key = match self.params.get(&self.api_key_param).await {
            Ok(k) => k,
            Err(e) => return (e.to_string(), false),
        };
        match self.http().get(&url).bearer_auth(key).send().await {
            Ok(r) if r.status() == 401 || r.status() == 403 => (
                format!(
                    "{url} refused the key in {} ({})",
                    self.api_key_param,
                    r.status()
                ),
                false,
            ),
            Ok(r) if r.status().is_server_error() => {
                (format!("{url} answered {}", r.status()), false)
            }
            Ok(r) => (format!("{url} answered {}", r.status()), true),
            Err(e) => (format!("{url} unreachable: {e}"), false),
        }
    }

    async fn post_json(
        &self,
        body: &serde_json::Value,
        key: &str,
    ) -> Result<serde_json::Value, StepError> {
        self.post_typed("", body, key).await
    }
}

/// The wire request for the model: GPT image models take `output_format` and refuse
/// `response_format`; DALL-E models are asked for `b64_json`.
fn image_body(req: &ImageRequest) -> serde_json::Value {
    let mut body = serde_json::json!({
        "model": req.model,
        "prompt": req.prompt,
        "n": req.n,
        "size": req.size,
    });
    if req.model.starts_with("dall-e") {
        body["response_format"] = "b64_json".into();
    } else if let Some(f) = &req.output_format {
        body["output_format"] = f.as_str().into();
    }
    body
}

/// The media type of an image `output_format`.
fn image_type(format: &str) -> &'static str {
    match format {
        "jpeg" | "jpg" => "image/jpeg",
        "webp" => "image/webp",
        _ => "image/png",
    }
}

impl ProviderClient {
    /// An image a provider answered by URL (it expires: fetched within the call).
    async fn download(&self, url: &str) -> Result<(Vec<u8>, String), StepError> {
        let res = self.http().get(url).send().await.map_err(transport)?;
        if !res.status().is_success() {
            let e = format!("the image at its URL answered {}", res.status());
            return Err(if res.status().is_server_error() {
                StepError::retryable(ErrorCode::ProviderUnavailable, e)
            } else {
                StepError::permanent(ErrorCode::ProviderNoImage, e)
            });
        }
        let content_type = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .filter(|t| t.starts_with("image/"))
            .unwrap_or("image/png")
            .to_string();
        let bytes =
            super::read_capped(res, super::MEDIA_ANSWER_CAP, "the image's url", transport).await?;
        Ok((bytes, content_type))
    }

    async fn post_typed<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        req: &impl Serialize,
        key: &str,
    ) -> Result<T, StepError> {
        let res = self.post(path, req, key).await?;
        let text = super::read_text_capped(res, super::JSON_ANSWER_CAP, path, transport).await?;
        serde_json::from_str(&text).map_err(|e| {
            StepError::permanent(ErrorCode::ProviderBadResponse, format!("{path}: {e}"))
        })
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
                .timeout(self.timeout_of(path))
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
            .filter(|s| s.is_finite() && *s >= 0.0)
            .or_else(|| {
                ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
                    .iter()
                    .filter_map(|h| header(h).as_deref().and_then(reset_secs))
                    .reduce(f64::max)
            });
        let body =
            super::read_text_capped(res, super::JSON_ANSWER_CAP, "an error answer", transport)
                .await
                .unwrap_or_default();
        let parsed: Option<ErrorBody> = serde_json::from_str(&body).ok();
        let message = parsed
            .as_ref()
            .map(|b| b.error.message.clone())
            .unwrap_or_else(|| crate::domain::redact::excerpt(&body, 200));
        let code = parsed.and_then(|b| b.error.code);
        let mut err = match status.as_u16() {
            // A billing matter: no wait cures it (and no Retry-After comes with it).
            429 if code.as_deref() == Some("insufficient_quota") => StepError::permanent(
                ErrorCode::ProviderQuotaExhausted,
                format!(
                    "the account of the key in {} has no quota left: {message}",
                    self.api_key_param
                ),
            ),
            429 => {
                let mut e = StepError::retryable(ErrorCode::ProviderRateLimited, message);
                e.retry_at = retry_after.map(|s| self.clock.now() + (s * 1000.0) as i64);
                e
            }
            408 | 500..=599 => StepError::retryable(ErrorCode::ProviderUnavailable, message),
            401 | 403 => StepError::permanent(
                ErrorCode::ProviderAuth,
                format!(
                    "the provider refused the key in {}: {message}",
                    self.api_key_param
                ),
            ),
            _ if matches!(
                code.as_deref(),
                Some("content_policy_violation" | "moderation_blocked")
            ) =>
            {
                StepError::permanent(ErrorCode::ContentRefused, message)
            }
            _ => StepError::permanent(ErrorCode::ProviderRejected, message),
        };
        err.provider_status = Some(status.as_u16());
        Err(err)
    }

    async fn param(&self, name: &str) -> Result<String, StepError> {
        super::secret(self.params.as_ref(), name, "").await
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

pub(super) fn transport(e: reqwest::Error) -> StepError {
    let code = if e.is_timeout() {
        ErrorCode::ProviderTimeout
    } else {
        ErrorCode::ProviderUnreachable
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
