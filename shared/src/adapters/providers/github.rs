//! A source-control host with GitHub's REST API (`https://api.github.com`, or a GitHub
//! Enterprise Server's `/api/v3`), as its reference documents it.
//!
//! - Every request carries `Accept: application/vnd.github+json`, `X-GitHub-Api-Version`,
//!   a `User-Agent` (GitHub refuses requests without one) and the token as `Bearer`.
//! - Errors are `{"message", "documentation_url", "errors"?}`. 401 (`Bad credentials`):
//!   the cached token is dropped and the request made once more. A rate limit is a 403 or
//!   429 with `x-ratelimit-remaining: 0` (wait until `x-ratelimit-reset`, epoch seconds) or
//!   with `retry-after` (seconds, secondary limits). Any other 403 is a missing permission
//!   (`Resource not accessible by integration`, `scm_forbidden`); 404 `scm_not_found`; 409
//!   `scm_conflict` (a stale `sha`, a protected branch's rules); 5xx retryable.
//! - A 422 is an answer, not an error: it says the request does not fit the repository as
//!   it is (`Reference already exists`, `A pull request already exists for ...`, a
//!   missing `sha`), and the phase decides what that means.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;

use super::openai::transport;
use crate::domain::{ErrorCode, StepError};
use crate::ports::{Clock, Params, Scm, ScmAnswer, ScmRequest};

/// The REST API version the requests are written against.
pub const API_VERSION: &str = "2022-11-28";
const USER_AGENT: &str = concat!("shepherd/", env!("CARGO_PKG_VERSION"));

/// Calls one GitHub-compatible host; its token is an SSM SecureString.
pub struct GitHubClient {
    http: std::sync::OnceLock<reqwest::Client>,
    timeout: Duration,
    params: Arc<dyn Params>,
    clock: Arc<dyn Clock>,
    base_url: String,
    token_param: String,
}

impl GitHubClient {
    pub fn new(
        params: Arc<dyn Params>,
        clock: Arc<dyn Clock>,
        base_url: impl Into<String>,
        token_param: impl Into<String>,
        timeout: Duration,
    ) -> Self {
        Self {
            http: std::sync::OnceLock::new(),
            timeout,
            params,
            clock,
            base_url: base_url.into(),
            token_param: token_param.into(),
        }
    }

    fn http(&self) -> &reqwest::Client {
        self.http.get_or_init(|| super::http_client(self.timeout))
    }

    /// The parameter of the token `req` is made with: the account's own, or the stack's.
    fn token<'a>(&'a self, req: &'a ScmRequest) -> &'a str {
        req.token_param.as_deref().unwrap_or(&self.token_param)
    }

    /// An answer, or the error its status means.
    fn classify(
        &self,
        req: &ScmRequest,
        status: StatusCode,
        header: impl Fn(&str) -> Option<String>,
        body: serde_json::Value,
    ) -> Result<ScmAnswer, StepError> {
        let code = status.as_u16();
        if status.is_success() || code == 422 {
            return Ok(ScmAnswer { status: code, body });
        }
        let message = body["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| crate::domain::redact::excerpt(&body.to_string(), 200));
        let what = format!("{} {}: {code} {message}", req.method, path_only(&req.path));
        let now = self.clock.now();
        let limited_until = header("x-ratelimit-remaining")
            .filter(|r| r.trim() == "0")
            .and_then(|_| header("x-ratelimit-reset"))
            .and_then(|r| r.trim().parse::<i64>().ok())
            .map(|epoch| epoch * 1000)
            .or_else(|| {
                header("retry-after")
                    .and_then(|s| s.trim().parse::<i64>().ok())
                    .map(|s| now + s * 1000)
            });
        let mut err = match code {
            403 | 429 if limited_until.is_some() || code == 429 => {
                let mut e = StepError::retryable(ErrorCode::ProviderRateLimited, what);
                e.retry_at = limited_until;
                e
            }
            401 => StepError::permanent(
                ErrorCode::ProviderAuth,
                format!("the host refused the token in {}: {what}", self.token(req)),
            ),
            403 => StepError::permanent(
                ErrorCode::ScmForbidden,
                format!("the token in {} may not do this: {what}", self.token(req)),
            ),
            404 => StepError::permanent(ErrorCode::ScmNotFound, what),
            409 => StepError::permanent(ErrorCode::ScmConflict, what),
            408 | 500..=599 => StepError::retryable(ErrorCode::ProviderUnavailable, what),
            _ => StepError::permanent(ErrorCode::ProviderRejected, what),
        };
        err.provider_status = Some(code);
        Err(err)
    }
}

/// The path without its query (a query may carry a branch name; paths are not secret,
/// but errors stay short).
fn path_only(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

#[async_trait]
impl Scm for GitHubClient {
    async fn send(&self, req: &ScmRequest) -> Result<ScmAnswer, StepError> {
        let method = reqwest::Method::from_bytes(req.method.as_bytes()).map_err(|_| {
            StepError::permanent(
                ErrorCode::ProviderRejected,
                format!("{:?} is not an HTTP method", req.method),
            )
        })?;
        let url = format!(
            "{}/{}",
            self.base_url.trim_end_matches('/'),
            req.path.trim_start_matches('/')
        );
        let param = self.token(req);
        for refreshed in [false, true] {
            let token = super::secret(self.params.as_ref(), param, "").await?;
            let mut call = self
                .http()
                .request(method.clone(), &url)
                .bearer_auth(&token)
                .header("Accept", "application/vnd.github+json")
                .header("X-GitHub-Api-Version", API_VERSION)
                .header("User-Agent", USER_AGENT);
            if let Some(body) = &req.body {
                call = call.json(body);
            }
            let res = call.send().await.map_err(transport)?;
            let status = res.status();
            if status == StatusCode::UNAUTHORIZED && !refreshed {
                self.params.invalidate(param);
                continue;
            }
            let headers = res.headers().clone();
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let text = super::read_text_capped(
                res,
                super::JSON_ANSWER_CAP,
                path_only(&req.path),
                transport,
            )
            .await?;
            let body = if text.trim().is_empty() {
                serde_json::Value::Null
            } else {
                match serde_json::from_str(&text) {
                    Ok(v) => v,
                    // A proxy's HTML error page is the host being unwell, not an answer.
                    Err(_) if status.is_server_error() => serde_json::json!({
                        "message": crate::domain::redact::excerpt(&text, 200)
                    }),
                    Err(e) => {
                        return Err(StepError::permanent(
                            ErrorCode::ProviderBadResponse,
                            format!("{} {}: not JSON: {e}", req.method, path_only(&req.path)),
                        ));
                    }
                }
            };
            return self.classify(req, status, header, body);
        }
        unreachable!("the loop returns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::memory::Memory;

    fn client() -> GitHubClient {
        let m = Arc::new(Memory::new(0));
        GitHubClient::new(
            m.clone(),
            m,
            "http://127.0.0.1:1",
            "/t",
            Duration::from_secs(1),
        )
    }

    fn answer(
        status: u16,
        headers: &[(&str, &str)],
        body: serde_json::Value,
    ) -> Result<ScmAnswer, StepError> {
        let req = ScmRequest::get("/repos/acme/widgets/pulls?head=acme:x");
        let header = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        };
        client().classify(&req, StatusCode::from_u16(status).unwrap(), header, body)
    }

    #[test]
    fn statuses_mean_what_githubs_reference_says() {
        let msg = |m: &str| serde_json::json!({"message": m, "documentation_url": "https://docs.github.com/rest"});
        assert!(answer(201, &[], msg("")).is_ok());
        let exists = answer(422, &[], msg("Validation Failed")).unwrap();
        assert_eq!(
            (exists.status, exists.message()),
            (422, "Validation Failed")
        );
        let forbidden =
            answer(403, &[], msg("Resource not accessible by integration")).unwrap_err();
        assert_eq!(forbidden.code, ErrorCode::ScmForbidden);
        assert!(
            forbidden.detail.contains(
                "GET /repos/acme/widgets/pulls: 403 Resource not accessible by integration"
            ),
            "{}",
            forbidden.detail
        );
        let limited = answer(
            403,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1900000000"),
            ],
            msg("API rate limit exceeded"),
        )
        .unwrap_err();
        assert_eq!(limited.code, ErrorCode::ProviderRateLimited);
        assert_eq!(limited.retry_at, Some(1_900_000_000_000));
        let secondary = answer(429, &[("retry-after", "60")], msg("secondary")).unwrap_err();
        assert_eq!(secondary.code, ErrorCode::ProviderRateLimited);
        assert_eq!(
            answer(404, &[], msg("Not Found")).unwrap_err().code,
            ErrorCode::ScmNotFound
        );
        assert_eq!(
            answer(409, &[], msg("rules")).unwrap_err().code,
            ErrorCode::ScmConflict
        );
        let down = answer(502, &[], msg("Server Error")).unwrap_err();
        assert_eq!(down.code, ErrorCode::ProviderUnavailable);
        assert_eq!(down.provider_status, Some(502));
        assert_eq!(
            answer(401, &[], msg("Bad credentials")).unwrap_err().code,
            ErrorCode::ProviderAuth
        );
    }
}
