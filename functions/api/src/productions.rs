//! `/productions` and `/approvals`: list, start, show, act, a production's audit trail.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};
use shepherd::audit::AuditQuery;
use shepherd::domain::{Act, Action, ProductionStatus};
use shepherd::ops::requests::{AuditPage, ListProductions};
use shepherd::view;

use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Who;
use crate::error::{Answer, ApiError, body, ok, page_of, paged};
use crate::schema::{
    ActionArguments, ActionName, AnswerName, ApprovalsPage, Common, Conflict, EventsPage,
    Forbidden, Invalid, NotFound, Production, ProductionDetail, ProductionsPage, TooLarge,
};
use crate::{Api, Operations};

pub(crate) fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show))
        .routes(routes!(output))
        .routes(routes!(act))
        .routes(routes!(audit))
        .routes(routes!(approvals))
        .routes(routes!(answer))
}

/// The caller's account's productions, newest first (stack operators name the account).
#[utoipa::path(get, path = "/productions", tag = "productions", params(ListProductions),
    responses((status = 200, body = ProductionsPage), Invalid, Common))]
async fn list(
    Who(caller): Who,
    Operations(ops): Operations,
    Query(q): Query<ListProductions>,
) -> Answer {
    let ps = ops.list_productions(&q, &caller).await?;
    let items: Vec<Value> = ps
        .items
        .iter()
        .map(|p| view::json(p, None, crate::error::now()))
        .collect();
    paged("productions", items, ps.next)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct CreateQuery {
    /// The pipeline to run (default: the stack's default pipeline).
    pipeline: Option<String>,
}

/// `POST /productions[?pipeline=<name>]`, the body the pipeline's input; with an
/// `Idempotency-Key` header a repeat within 24 hours answers 200 with the first production
/// (nothing spent), and the key with another input 409.
#[utoipa::path(post, path = "/productions", tag = "productions",
    params(CreateQuery, ("Idempotency-Key" = Option<String>, Header,
        description = "1 to 255 visible ASCII characters; a repeat within 24 hours answers 200 with the first production")),
    request_body(content = Object, description = "The pipeline's input (its definition's input schema)",
        example = json!({"account": "acme", "title": "Why the tide turns",
            "topic": "How the moon and the sun pull the oceans", "scenes": 2})),
    responses(
        (status = 201, body = Production, headers(("Location" = String))),
        (status = 200, description = "A repeat of an Idempotency-Key: the first production", body = Production),
        Invalid, Forbidden, Conflict, TooLarge, Common))]
async fn create(
    Who(caller): Who,
    Operations(ops): Operations,
    Query(q): Query<CreateQuery>,
    headers: axum::http::HeaderMap,
    bytes: Bytes,
) -> Answer {
    let text = std::str::from_utf8(&bytes).map_err(|_| ApiError::invalid("body is not UTF-8"))?;
    let key = match headers.get("idempotency-key") {
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::invalid("the Idempotency-Key header is 1 to 255 visible ASCII characters")
        })?),
        None => None,
    };
    let (p, repeated) = ops
        .start_once(q.pipeline.as_deref(), text, key, &caller)
        .await?;
    let location = format!("/productions/{}", p.id);
    Ok((
        if repeated {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        },
        [(header::LOCATION, location)],
        Json(view::json(&p, None, crate::error::now())),
    )
        .into_response())
}

/// A production: state, phases, `available_actions`, `summary`, outputs and artifacts.
#[utoipa::path(get, path = "/productions/{id}", tag = "productions",
    params(("id" = String, Path)), responses((status = 200, body = ProductionDetail), Invalid, NotFound, Common))]
async fn show(Who(caller): Who, Operations(ops): Operations, Path(id): Path<String>) -> Answer {
    let p = ops.get(&id, &caller).await?;
    let (outputs, artifacts) = ops.detail(&p).await?;
    ok(view::detail(&p, &outputs, &artifacts, crate::error::now()))
}

/// Above this an output is answered by a link to the bucket (Lambda answers at most 6 MB).
const OUTPUT_ANSWER_MAX: usize = 5 << 20;

/// One phase's output, whole: what `GET /productions/{id}` shows by reference when it is
/// large. One over 5 MB answers 303, to a download link valid 15 minutes.
#[utoipa::path(get, path = "/productions/{id}/outputs/{phase}", tag = "productions",
    params(("id" = String, Path), ("phase" = String, Path)),
    responses(
        (status = 200, description = "The phase's output (its contract's JSON)", body = Object),
        (status = 303, description = "A large output: its download link", headers(("Location" = String))),
        Invalid, NotFound, Common))]
async fn output(
    Who(caller): Who,
    Operations(ops): Operations,
    Path((id, phase)): Path<(String, String)>,
) -> Answer {
    let p = ops.get(&id, &caller).await?;
    let out = ops.output(&p, &phase, OUTPUT_ANSWER_MAX).await?;
    match (out.body, out.link) {
        (Some(body), _) => ok(body),
        (None, link) => Ok((
            StatusCode::SEE_OTHER,
            [(header::LOCATION, link.unwrap_or_default())],
        )
            .into_response()),
    }
}

/// The action named in the path, with its arguments from the body: an unknown action is
/// not found (404); a body that does not fit it is a 400 naming the problem.
fn action(name: &str, body: &Bytes) -> Result<Act, ApiError> {
    let Some(action) = Action::parse(name) else {
        let all: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        return Err(ApiError::not_found(format!(
            "no action {name:?} ({})",
            all.join(", ")
        )));
    };
    let mut args: serde_json::Map<String, Value> = self::body(body)?;
    args.insert("action".into(), action.as_str().into());
    serde_json::from_value(Value::Object(args))
        .map_err(|e| ApiError::invalid(format!("{action} needs {e}")))
}

/// An action on a production (override needs the admin role); a 409 lists the available ones.
#[utoipa::path(post, path = "/productions/{id}/actions/{action}", tag = "productions",
    params(("id" = String, Path), ("action" = ActionName, Path)),
    request_body(content = Option<ActionArguments>),
    responses((status = 200, body = Production), Invalid, Forbidden, NotFound, Conflict, TooLarge, Common))]
async fn act(
    Who(caller): Who,
    Operations(ops): Operations,
    Path((id, name)): Path<(String, String)>,
    bytes: Bytes,
) -> Answer {
    let act = action(&name, &bytes)?;
    let p = ops.act(&id, act, &caller).await?;
    ok(view::json(&p, None, crate::error::now()))
}

/// A production's audit trail.
#[utoipa::path(get, path = "/productions/{id}/audit", tag = "productions",
    params(("id" = String, Path), AuditPage), responses((status = 200, body = EventsPage), Invalid, NotFound, Common))]
async fn audit(
    Who(caller): Who,
    Operations(ops): Operations,
    Path(id): Path<String>,
    Query(q): Query<AuditPage>,
) -> Answer {
    let rows = ops
        .audit(
            &AuditQuery::Production(id),
            q.limit,
            q.cursor.as_deref(),
            &caller,
        )
        .await?;
    page_of("events", rows)
}

/// Productions waiting for approval.
#[utoipa::path(get, path = "/approvals", tag = "productions", params(ListProductions),
    responses((status = 200, body = ApprovalsPage), Invalid, Common))]
async fn approvals(
    Who(caller): Who,
    Operations(ops): Operations,
    Query(q): Query<ListProductions>,
) -> Answer {
    let q = ListProductions {
        status: Some(ProductionStatus::AwaitingApproval),
        ..q
    };
    let ps = ops.list_productions(&q, &caller).await?;
    let items: Vec<Value> = ps
        .items
        .iter()
        .map(|p| {
            json!({
                "production_id": p.id,
                "approval": p.approval,
                "summary": view::banner(p),
            })
        })
        .collect();
    paged("approvals", items, ps.next)
}

/// Answer an approval: approve, or reject `{feedback, phase?}`.
#[utoipa::path(post, path = "/approvals/{id}/{answer}", tag = "productions",
    params(("id" = String, Path), ("answer" = AnswerName, Path)),
    request_body(content = Option<ActionArguments>),
    responses((status = 200, body = Production), Invalid, Forbidden, NotFound, Conflict, TooLarge, Common))]
async fn answer(
    who: Who,
    ops: Operations,
    Path((id, answer)): Path<(String, String)>,
    bytes: Bytes,
) -> Answer {
    if answer != "approve" && answer != "reject" {
        return Err(ApiError::not_found(format!(
            "no answer {answer:?} (approve, reject)"
        )));
    }
    act(who, ops, Path((id, answer)), bytes).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use shepherd::ops::OpsError;

    #[test]
    fn action_bodies_are_checked() {
        let empty = Bytes::new();
        assert!(matches!(
            action("reject", &empty).unwrap_err().status,
            StatusCode::BAD_REQUEST
        ));
        let both =
            Bytes::from_static(b"{\"reason\": \"r\", \"skip_gate\": true, \"jump_to\": \"voice\"}");
        let act = action("override", &both).unwrap();
        let p = shepherd::domain::start(
            "p".into(),
            "a".into(),
            shepherd::domain::PipelineVersion::new("content", 1),
            &["brief", "voice"],
            Default::default(),
            "t".into(),
            0,
        );
        let mut p = p.production;
        p.status = ProductionStatus::Paused;
        let refused = shepherd::domain::decide(&p, act.into(), 1).unwrap_err();
        assert_eq!(
            ApiError::from(OpsError::from(refused)).status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            action("explode", &empty).unwrap_err().status,
            StatusCode::NOT_FOUND
        );
        let from = Bytes::from_static(b"{\"feedback\": \"x\", \"phase\": \"assets\"}");
        assert_eq!(
            action("reject", &from).unwrap(),
            Act::Reject {
                feedback: "x".into(),
                phase: Some("assets".into())
            }
        );
        let typo = Bytes::from_static(b"{\"feedbak\": \"x\"}");
        let err = action("reject", &typo).unwrap_err();
        assert!(err.message.contains("feedbak"), "{}", err.message);
    }
}
