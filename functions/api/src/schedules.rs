//! `/schedules`: schedules that start a pipeline on a cron expression or a rate, their slot
//! history, and what operators do with them (pause with a note, resume, trigger now,
//! backfill). Admins create and remove; operators pause, resume, trigger and backfill;
//! viewers read; within their account.

use axum::body::Bytes;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use shepherd::domain::schedule::{MAX_BACKFILL_PER_TICK, Schedule, ScheduleSpec};
use shepherd::ops::ScheduleDetail;
use shepherd::ops::requests::{ListSchedules, ScheduleHistory};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Who;
use crate::error::{Answer, ApiError, body, instant, json_of, ok, page_of, with_status};
use crate::schema::{
    Common, Conflict, Deleted, Forbidden, Invalid, NotFound, SchedulesPage, TooLarge, Triggered,
};
use crate::{Api, Operations};

pub(crate) fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, patch, delete))
        .routes(routes!(trigger))
        .routes(routes!(backfill))
}

/// The schedules the caller sees, newest first.
#[utoipa::path(get, path = "/schedules", tag = "schedules", params(ListSchedules),
    responses((status = 200, body = SchedulesPage), Invalid, Forbidden, Common))]
async fn list(
    Who(caller): Who,
    Operations(ops): Operations,
    Query(q): Query<ListSchedules>,
) -> Answer {
    let page = ops
        .schedules(q.account.as_deref(), &caller, q.limit, q.cursor.as_deref())
        .await?;
    page_of("schedules", page)
}

/// Create a schedule (admin): 201 with it and its next slot. Its input is checked against
/// the pipeline's schema now.
#[utoipa::path(post, path = "/schedules", tag = "schedules", request_body = ScheduleSpec,
    responses((status = 201, body = Schedule), Invalid, Forbidden, TooLarge, Common))]
async fn create(Who(caller): Who, Operations(ops): Operations, bytes: Bytes) -> Answer {
    let spec: ScheduleSpec = body(&bytes)?;
    with_status(
        StatusCode::CREATED,
        ops.create_schedule(spec, &caller).await?,
    )
}

/// One schedule and its slot history, newest first: fired (the production) or missed
/// (the reason).
#[utoipa::path(get, path = "/schedules/{id}", tag = "schedules",
    params(("id" = String, Path), ScheduleHistory),
    responses((status = 200, body = ScheduleDetail), Invalid, NotFound, Common))]
async fn show(
    Who(caller): Who,
    Operations(ops): Operations,
    Path(id): Path<String>,
    Query(q): Query<ScheduleHistory>,
) -> Answer {
    json_of(
        ops.schedule(&id, &caller, q.limit, q.cursor.as_deref())
            .await?,
    )
}

/// `{"paused": true, "note": "..."}` pauses (its slots are missed as `paused`);
/// `{"paused": false}` resumes.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SchedulePatch {
    paused: bool,
    #[serde(default)]
    note: Option<String>,
}

/// Pause a schedule with a note, or resume it (operator).
#[utoipa::path(patch, path = "/schedules/{id}", tag = "schedules", params(("id" = String, Path)),
    request_body = SchedulePatch,
    responses((status = 200, body = Schedule), Invalid, Forbidden, NotFound, Conflict, TooLarge, Common))]
async fn patch(
    Who(caller): Who,
    Operations(ops): Operations,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Answer {
    let patch: SchedulePatch = body(&bytes)?;
    let s = match (patch.paused, patch.note) {
        (true, Some(note)) => ops.pause_schedule(&id, &note, &caller).await?,
        (true, None) => {
            return Err(ApiError::invalid(
                "pausing needs a note saying why (e.g. {\"paused\": true, \"note\": \"release freeze\"})",
            ));
        }
        (false, None) => ops.resume_schedule(&id, &caller).await?,
        (false, Some(_)) => return Err(ApiError::invalid("a note is for pausing")),
    };
    json_of(s)
}

/// Remove a schedule (admin); its history and audit stay.
#[utoipa::path(delete, path = "/schedules/{id}", tag = "schedules", params(("id" = String, Path)),
    responses((status = 200, body = Deleted), Invalid, Forbidden, NotFound, Common))]
async fn delete(Who(caller): Who, Operations(ops): Operations, Path(id): Path<String>) -> Answer {
    ops.delete_schedule(&id, &caller).await?;
    ok(json!({"id": id, "deleted": true}))
}

/// Start the schedule's production now (operator), whatever its slots, pause or overlap.
#[utoipa::path(post, path = "/schedules/{id}/trigger", tag = "schedules",
    params(("id" = String, Path)),
    responses((status = 201, body = Triggered), Invalid, Forbidden, NotFound, Conflict, Common))]
async fn trigger(Who(caller): Who, Operations(ops): Operations, Path(id): Path<String>) -> Answer {
    let (schedule, production) = ops.trigger_schedule(&id, &caller).await?;
    with_status(
        StatusCode::CREATED,
        json!({"schedule": schedule, "production": production}),
    )
}

/// `{from, until, per_tick?}`: the slots in `[from, until]` (RFC 3339 or epoch ms; at most
/// 1,000), started `per_tick` a minute (1-20; 5 by default).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct BackfillBody {
    from: String,
    until: String,
    #[serde(default)]
    per_tick: Option<u32>,
}

/// Start the slots of a past time range, a few a minute (operator): 202, the scheduler
/// starts them.
#[utoipa::path(post, path = "/schedules/{id}/backfill", tag = "schedules",
    params(("id" = String, Path)), request_body = BackfillBody,
    responses((status = 202, body = Schedule), Invalid, Forbidden, NotFound, Conflict, TooLarge, Common))]
async fn backfill(
    Who(caller): Who,
    Operations(ops): Operations,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Answer {
    let b: BackfillBody = body(&bytes)?;
    let per_tick = b.per_tick.unwrap_or(5.min(MAX_BACKFILL_PER_TICK));
    let s = ops
        .backfill_schedule(
            &id,
            instant("from", &b.from)?,
            instant("until", &b.until)?,
            per_tick,
            &caller,
        )
        .await?;
    with_status(StatusCode::ACCEPTED, s)
}
