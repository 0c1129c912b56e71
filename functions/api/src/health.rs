//! `/health`: whether the configuration and the store answer. Anyone may ask (API Gateway
//! lets it through unauthenticated) and gets the status only; a verified caller also gets
//! which check failed, as a code. What failed inside is logged with the request id, never
//! answered.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::Api;
use crate::schema::Health;

pub(crate) fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::new().routes(routes!(health))
}

/// `ok`, or 503 `degraded` when the configuration or the store is unreachable; the checks
/// only for a caller with a token.
#[utoipa::path(get, path = "/health", tag = "health", security(()),
    responses((status = 200, body = Health), (status = 503, description = "degraded", body = Health)))]
async fn health(State(api): State<Api>, parts: Parts) -> Response {
    let known = api.auth().caller(&parts).is_ok();
    let answer = |ok: bool, checks: Value| {
        let status = if ok { "ok" } else { "degraded" };
        let mut body = json!({ "status": status });
        if known {
            body["checks"] = checks;
        }
        let code = if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (code, Json(body)).into_response()
    };
    let ops = match tokio::time::timeout(Duration::from_secs(5), api.ops()).await {
        Ok(Ok(ops)) => ops,
        Ok(Err(e)) => {
            let detail = e.detail.as_deref().unwrap_or(&e.message);
            tracing::warn!(check = "config", detail, "health degraded");
            return answer(false, json!({"config": "unavailable"}));
        }
        Err(_) => return answer(false, json!({"config": "timeout"})),
    };
    match tokio::time::timeout(Duration::from_secs(5), ops.probe()).await {
        Ok(Ok(())) => answer(true, json!({"config": "ok", "store": "ok"})),
        Ok(Err(e)) => {
            tracing::warn!(check = "store", detail = %shepherd::domain::redact::excerpt(&e.to_string(), 2000), "health degraded");
            answer(false, json!({"config": "ok", "store": "unavailable"}))
        }
        Err(_) => answer(false, json!({"config": "ok", "store": "timeout"})),
    }
}
