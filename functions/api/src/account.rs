//! `/account`, `/pipelines`, `/integrations`: what the stack and an account have.

use axum::body::Bytes;
use axum::extract::{Path, Query};
use serde::Deserialize;
use serde_json::json;
use shepherd::ops::requests::account_of;

use shepherd::domain::access::AccountAccess;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Who;
use crate::error::{Answer, body, json_of, ok};
use crate::schema::{
    AccountUsage, Common, Forbidden, Integration, Integrations, Invalid, NotFound, Pipelines,
    TooLarge,
};
use crate::{Api, Operations};

pub(crate) fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::new()
        .routes(routes!(account))
        .routes(routes!(access, set_access))
        .routes(routes!(pipelines))
        .routes(routes!(integrations))
        .routes(routes!(set_integration))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AccountQuery {
    /// The account (stack operators name one; an account's callers get their own).
    account: Option<String>,
}

/// The account's limits and usage.
#[utoipa::path(get, path = "/account", tag = "account", params(AccountQuery),
    responses((status = 200, body = AccountUsage), Invalid, NotFound, Common))]
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
/// The repositories, bases, branch prefix and token parameter the account's jobs may use.
#[utoipa::path(get, path = "/account/access", tag = "account", params(AccountQuery),
    responses((status = 200, body = AccountAccess), Invalid, NotFound, Common))]
async fn access(
    Who(caller): Who,
    Operations(ops): Operations,
    Query(q): Query<AccountQuery>,
) -> Answer {
    let account = account_of(&caller, q.account.as_deref())?;
    json_of(ops.account_access(account, &caller).await?)
}

/// `PUT /account/access?account=<a>` (admin): replaces them (audited).
/// Set an account's access (stack operators only), audited.
#[utoipa::path(put, path = "/account/access", tag = "account", params(AccountQuery),
    request_body = AccountAccess,
    responses((status = 200, body = AccountAccess), Invalid, Forbidden, TooLarge, Common))]
async fn set_access(
    Who(caller): Who,
    Operations(ops): Operations,
    Query(q): Query<AccountQuery>,
    bytes: Bytes,
) -> Answer {
    let account = account_of(&caller, q.account.as_deref())?;
    let access: AccountAccess = body(&bytes)?;
    json_of(ops.set_account_access(account, access, &caller).await?)
}

/// `GET /pipelines`: every version, the latest, and the open productions on each.
/// The pipeline versions the stack runs or still has the caller's productions on.
#[utoipa::path(get, path = "/pipelines", tag = "account",
    responses((status = 200, body = Pipelines), Common))]
async fn pipelines(Who(caller): Who, Operations(ops): Operations) -> Answer {
    let list = ops.pipelines_in_use(&caller).await?;
    ok(json!({"pipelines": list}))
}

/// The providers in chain order, with health.
#[utoipa::path(get, path = "/integrations", tag = "account",
    responses((status = 200, body = Integrations), Common))]
async fn integrations(Who(caller): Who, Operations(ops): Operations) -> Answer {
    let list = ops.integrations(&caller).await?;
    ok(json!({"integrations": list}))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct IntegrationPatch {
    enabled: bool,
    #[serde(default)]
    reason: String,
}

/// Take an integration out of the chain, or back (stack operators only).
#[utoipa::path(patch, path = "/integrations/{id}", tag = "account",
    params(("id" = String, Path)), request_body = IntegrationPatch,
    responses((status = 200, body = Integration), Invalid, Forbidden, NotFound, TooLarge, Common))]
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
