//! One error mapping at the edge: an operation's error becomes a status and a JSON body
//! `{code, message}` here and nowhere else (the operations know nothing of HTTP); and the
//! helpers every route answers with.

use axum::Json;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use shepherd::ops::OpsError;

/// The HTTP status an operation's error answers with (the service knows nothing of HTTP).
pub trait HttpStatus {
    fn status(&self) -> u16;
}

impl HttpStatus for OpsError {
    fn status(&self) -> u16 {
        match self {
            Self::InvalidInput(_) | Self::Invalid(_) => 400,
            Self::Unauthorized(_) => 401,
            Self::Forbidden(_) => 403,
            Self::NotFound(_) | Self::Missing(_) => 404,
            Self::Gone(_) => 410,
            Self::Conflict { .. } | Self::KeyReused { .. } | Self::Busy(_) => 409,
            Self::LimitReached(_) => 429,
            Self::DispatchFailed { .. } | Self::Store(_) | Self::Config(_) => 503,
        }
    }
}

/// An error as the API answers it.
#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    available: Option<Vec<String>>,
    /// What went wrong inside, for the log (with the request id), never for the caller: a
    /// store's or AWS's own text can name roles, accounts and tables.
    pub(crate) detail: Option<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            available: None,
            detail: None,
        }
    }

    /// The stack could not do it now: a code and the request id for the caller, the cause
    /// in the log.
    pub(crate) fn unavailable(detail: impl Into<String>) -> Self {
        Self {
            detail: Some(shepherd::domain::redact::excerpt(&detail.into(), 2000)),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the stack cannot do this right now (its store or configuration is \
                 unavailable); try again, and quote the request id if it persists",
            )
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl From<OpsError> for ApiError {
    fn from(e: OpsError) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let code = match status.as_u16() {
            _ if matches!(e, OpsError::KeyReused { .. }) => "idempotency_key_reused",
            400 => "invalid_request",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            409 => "conflict",
            410 => "gone",
            429 => "limit_reached",
            _ => "unavailable",
        };
        if status.is_server_error() {
            // A production created whose first message was lost is kept and dispatched
            // by the sweep: say so, without the queue's own error text.
            if let OpsError::DispatchFailed { id, .. } = &e {
                return Self {
                    message: format!(
                        "production {id} was created but its first message could not be sent; \
                         the recovery sweep will dispatch it"
                    ),
                    ..Self::unavailable(e.to_string())
                };
            }
            return Self::unavailable(e.to_string());
        }
        let available = match &e {
            OpsError::Conflict { available, .. } => {
                Some(available.iter().map(|a| a.as_str().to_string()).collect())
            }
            _ => None,
        };
        Self {
            status,
            code,
            message: e.to_string(),
            available,
            detail: None,
        }
    }
}

/// Every error answer is `{code, message}` JSON, also those axum's extractors write as
/// plain text (a malformed query, a body over the limit, a wrong content type).
pub(crate) async fn json_errors(res: Response) -> Response {
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let text = match axum::body::to_bytes(res.into_body(), 64 * 1024).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let code = match status.as_u16() {
        400 | 415 | 422 => "invalid_request",
        404 | 405 => "not_found",
        413 => "too_large",
        _ if status.is_server_error() => "unavailable",
        _ => "invalid_request",
    };
    let message = if text.is_empty() || status.is_server_error() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        shepherd::domain::redact::excerpt(&text, 500)
    };
    (status, Json(json!({"code": code, "message": message}))).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            let detail = self.detail.as_deref().unwrap_or(&self.message);
            tracing::warn!(code = self.code, detail, "request failed");
        }
        let mut body = json!({"code": self.code, "message": self.message});
        if let Some(a) = self.available {
            body["available"] = a.into();
        }
        (self.status, Json(body)).into_response()
    }
}

/// Each request's id: API Gateway's (in Lambda) or a new one (locally). It goes on the
/// answer (`x-request-id`, and `request_id` in every error body) and on every log line of
/// the request, so a caller's report finds the log.
pub(crate) async fn request_id(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use tracing::Instrument as _;
    let id = req
        .extensions()
        .get::<lambda_http::request::RequestContext>()
        .and_then(|c| match c {
            lambda_http::request::RequestContext::ApiGatewayV2(c) => c.request_id.clone(),
            _ => None,
        })
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let span = tracing::info_span!("request", request_id = %id);
    let res = next.run(req).instrument(span).await;
    let (mut parts, body) = res.into_parts();
    if let Ok(v) = header::HeaderValue::from_str(&id) {
        parts.headers.insert("x-request-id", v);
    }
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(parts.status.is_client_error() || parts.status.is_server_error()) || !is_json {
        return Response::from_parts(parts, body);
    }
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let mut v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({}));
    if let Some(o) = v.as_object_mut() {
        o.insert("request_id".into(), id.into());
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(v.to_string()))
}

/// What a route answers.
pub(crate) type Answer = Result<Response, ApiError>;

pub(crate) fn ok(v: Value) -> Answer {
    Ok(Json(v).into_response())
}

/// A JSON body, `{}` when empty; anything else is a 400 naming the problem.
pub(crate) fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| ApiError::invalid(format!("request body: {e}")))
}

/// A page of a list: its items under `name`, and `next_cursor` (null on the last page) to
/// pass back as `?cursor=` for the next.
pub(crate) fn paged(name: &str, items: Vec<Value>, next: Option<String>) -> Answer {
    ok(json!({ name: items, "next_cursor": next }))
}

/// An operation's page, each item as it serialises.
pub(crate) fn page_of<T: serde::Serialize>(name: &str, page: shepherd::ports::Page<T>) -> Answer {
    let items = page
        .items
        .iter()
        .map(|i| serde_json::to_value(i).unwrap_or_default())
        .collect();
    paged(name, items, page.next)
}

/// Epoch milliseconds or RFC 3339.
pub(crate) fn instant(name: &str, v: &str) -> Result<i64, ApiError> {
    let ms = match v.parse::<i64>() {
        Ok(ms) => ms,
        Err(_) => shepherd::view::parse_time(v).ok_or_else(|| {
            ApiError::invalid(format!(
                "{name} {v:?}: expected epoch milliseconds or RFC 3339"
            ))
        })?,
    };
    shepherd::domain::input::instant(name, ms).map_err(ApiError::invalid)
}

/// An operation's answer as JSON with `status`.
pub(crate) fn with_status(status: StatusCode, v: impl serde::Serialize) -> Answer {
    Ok((status, Json(serde_json::to_value(v).unwrap_or_default())).into_response())
}

/// The value as JSON (200).
pub(crate) fn json_of(v: impl serde::Serialize) -> Answer {
    with_status(StatusCode::OK, v)
}

/// The wall clock's now (what `available_actions` is computed at).
pub(crate) fn now() -> shepherd::domain::Millis {
    shepherd::ports::Clock::now(&shepherd::ports::SystemClock)
}
