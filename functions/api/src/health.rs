//! `/health`: the configuration and the store reachable, or 503 `degraded`.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::Api;
use crate::error::ApiError;

pub(crate) fn routes() -> Router<Api> {
    Router::new().route("/health", get(health))
}

async fn health(State(api): State<Api>) -> Response {
    let degraded = |check: &str, e: ApiError| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "degraded", "checks": {check: e.message}})),
        )
            .into_response()
    };
    let ops = match tokio::time::timeout(Duration::from_secs(5), api.ops()).await {
        Ok(Ok(ops)) => ops,
        Ok(Err(e)) => return degraded("config", e),
        Err(_) => return degraded("config", ApiError::invalid("timed out")),
    };
    match tokio::time::timeout(Duration::from_secs(5), ops.probe()).await {
        Ok(Ok(())) => Json(json!({"status": "ok", "checks": {"store": "ok"}})).into_response(),
        Ok(Err(e)) => degraded("store", e.into()),
        Err(_) => degraded("store", ApiError::invalid("timed out")),
    }
}
