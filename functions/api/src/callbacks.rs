//! `/callbacks/{token}`: external jobs report here (a heartbeat, their result, their
//! failure), authenticated by the callback token their phase gave them, not by an
//! operator's token: API Gateway lets that one route through unauthenticated.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path};
use shepherd::ops::{CallbackAnswer, JobReport};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{Answer, ApiError, json_of};
use crate::schema::{Common, Invalid, TooLarge};
use crate::{Api, Operations};

/// A report's body may be this large (a Lambda takes at most 6 MB in a request); a larger
/// result is refused (413) and changes nothing.
pub const MAX_REPORT: usize = 6_000_000;

pub(crate) fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::new()
        .routes(routes!(report))
        .layer(DefaultBodyLimit::max(MAX_REPORT))
}

/// An external job's report for the phase attempt that waits on it: `{"status":
/// "heartbeat"}`, `{"status": "succeeded", "result": ...}` or `{"status": "failed",
/// "error": {code, class, message}}`. Idempotent: a repeated result answers
/// `already_received`. A token that is not the waiting attempt's is 401; an attempt that
/// no longer waits (a newer attempt, a cancelled production, a passed deadline) is 410:
/// stop the job. Nothing changes on a refusal.
#[utoipa::path(post, path = "/callbacks/{token}", tag = "callbacks", security(()),
    params(("token" = String, Path, description = "the callback token the job was given")),
    request_body = JobReport,
    responses(
        (status = 200, body = CallbackAnswer),
        (status = 401, description = "not the waiting attempt's token", body = crate::schema::ErrorBody),
        (status = 410, description = "the attempt no longer waits: stop the job", body = crate::schema::ErrorBody),
        Invalid, TooLarge, Common))]
async fn report(Operations(ops): Operations, Path(token): Path<String>, bytes: Bytes) -> Answer {
    let report: JobReport = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid(format!("request body: {e}")))?;
    json_of(ops.callback(&token, report).await?)
}
