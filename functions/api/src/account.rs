//! `/account`, `/pipelines`, `/integrations`: what the stack and an account have.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use shepherd::ops::requests::account_of;

use crate::auth::Who;
use crate::error::{Answer, body, json_of, ok};
use crate::{Api, Operations};

pub(crate) fn routes() -> Router<Api> {
    Router::new()
        .route("/account", get(account))
        .route("/account/access", get(access).put(set_access))
        .route("/pipelines", get(pipelines))
        .route("/integrations", get(integrations))
        .route("/integrations/{id}", axum::routing::patch(set_integration))
}

#[derive(Deserialize)]
struct AccountQuery {
    account: Option<String>,
}

async fn account(
    Who(caller): Who,
    Operations(ops): Operations,
    Query(q): Query<AccountQuery>,
) -> Answer {
    let account = account_of(&caller, q.account.as_deref())?;
    json_of(ops.account_usage(account, &caller).await?)
}

/// `GET /account/access`: the repositories, bases, branch prefix and token an account's
/// jobs may use.
async fn access(
    Who(caller): Who,
    Operations(ops): Operations,
    Query(q): Query<AccountQuery>,
) -> Answer {
    let account = account_of(&caller, q.account.as_deref())?;
    json_of(ops.account_access(account, &caller).await?)
}

/// `PUT /account/access?account=<a>` (admin): replaces them (audited).
async fn set_access(
    Who(caller): Who,
    Operations(ops): Operations,
    Query(q): Query<AccountQuery>,
    bytes: Bytes,
) -> Answer {
    let account = account_of(&caller, q.account.as_deref())?;
    let access: shepherd::domain::access::AccountAccess = body(&bytes)?;
    json_of(ops.set_account_access(account, access, &caller).await?)
}

/// `GET /pipelines`: every version, the latest, and the open productions on each.
async fn pipelines(Who(caller): Who, Operations(ops): Operations) -> Answer {
    let list = ops.pipelines_in_use(&caller).await?;
    ok(json!({"pipelines": list}))
}

async fn integrations(Who(caller): Who, Operations(ops): Operations) -> Answer {
    let list = ops.integrations(&caller).await?;
    ok(json!({"integrations": list}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IntegrationPatch {
    enabled: bool,
    #[serde(default)]
    reason: String,
}

async fn set_integration(
    Who(caller): Who,
    Operations(ops): Operations,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Answer {
    let patch: IntegrationPatch = body(&bytes)?;
    json_of(
        ops.set_integration_enabled(&id, patch.enabled, &patch.reason, &caller)
            .await?,
    )
}
