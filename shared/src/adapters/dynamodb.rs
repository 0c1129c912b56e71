//! The state table: one small "hot" item per production (state + the audit events of its
//! last write), its brief and outputs in their own items, and a KEYS_ONLY index per account.
//!
//! | item       | pk       | sk                  |
//! |------------|----------|---------------------|
//! | production | `P#<id>` | `P`                 |
//! | brief      | `P#<id>` | `B`                 |
//! | output     | `P#<id>` | `O#<phase>#<attempt>` |

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::sdk_error;
use crate::domain::{
    Approval, AuditEvent, Brief, ErrorClass, GatePolicy, Millis, PhaseError, PhaseState,
    PhaseStatus, Production, ProductionStatus, Transition,
};
use crate::integrations::Health;
use crate::ports::{
    Actor, ClaimOutcome, CommitOutcome, Outcome, OutcomeStatus, Outcomes, Store, StoreError,
};

type Item = HashMap<String, AttributeValue>;

/// The hot item, with short attribute names: its size is the cost of every transition.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredProduction {
    pub pk: String,
    pub sk: String,
    pub id: String,
    pub acct: String,
    pub pl: String,
    pub st: ProductionStatus,
    pub v: u64,
    pub tr: String,
    pub ca: Millis,
    pub ua: Millis,
    /// Phase order.
    pub po: Vec<String>,
    /// Phases by name, so a claim can update one in place.
    pub ph: BTreeMap<String, StoredPhase>,
    /// Gate policy; omitted when the production has no gates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<GatePolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ap: Option<Approval>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ov: bool,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rv: u32,
    /// Warnings raised by phases' outputs, and when they were acknowledged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wn: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wa: Option<Millis>,
    /// Sparse `by_due` index: present only while the production is due for the sweep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dat: Option<Millis>,
    /// The audit events of this write; the table's stream projects them to the audit table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub au: Vec<StoredAudit>,
    /// Listing index (KEYS_ONLY, so later writes never touch it).
    pub gpk: String,
    pub gsk: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredPhase {
    s: PhaseStatus,
    a: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    qa: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sa: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lu: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fa: Option<Millis>,
    #[serde(default)]
    ec: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    le: Option<StoredError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    o: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fb: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredError {
    c: String,
    k: ErrorClass,
    d: String,
    a: u32,
    t: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ps: Option<u16>,
}

/// An audit event as carried in the hot item.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredAudit {
    pub t: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a: Option<u32>,
    pub o: String,
    pub at: Millis,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub d: String,
    pub by: String,
}

/// One partition for the due index: the sweep's reads grow with what is due, which is
/// small by design. Shard it (`DUE#<n>`) if thousands are ever due at once.
const DUE_PARTITION: &str = "DUE";

fn is_zero(n: &u32) -> bool {
    *n == 0
}

pub(crate) fn production_pk(id: &str) -> String {
    format!("P#{id}")
}

impl StoredProduction {
    fn from_domain(p: &Production, audit: &[AuditEvent], actor: &Actor) -> Self {
        Self {
            pk: production_pk(&p.id),
            sk: "P".into(),
            id: p.id.clone(),
            acct: p.account.clone(),
            pl: p.pipeline.clone(),
            st: p.status,
            v: p.version,
            tr: p.trace_id.clone(),
            ca: p.created_at,
            ua: p.updated_at,
            po: p.phases.iter().map(|ph| ph.name.clone()).collect(),
            ph: p
                .phases
                .iter()
                .map(|ph| {
                    let stored = StoredPhase {
                        s: ph.status,
                        a: ph.attempt,
                        qa: ph.queued_at,
                        sa: ph.started_at,
                        lu: ph.lease_until,
                        fa: ph.finished_at,
                        ec: ph.error_count,
                        le: ph.last_error.as_ref().map(|e| StoredError {
                            c: e.code.clone(),
                            k: e.class,
                            d: e.detail.clone(),
                            a: e.attempt,
                            t: e.at,
                            ps: e.provider_status,
                        }),
                        o: ph.output.clone(),
                        fb: ph.feedback.clone(),
                    };
                    (ph.name.clone(), stored)
                })
                .collect(),
            au: audit
                .iter()
                .map(|e| StoredAudit {
                    t: e.kind.clone(),
                    p: e.phase.clone(),
                    a: e.attempt,
                    o: e.outcome.clone(),
                    at: e.at,
                    d: e.detail.clone(),
                    by: actor.0.clone(),
                })
                .collect(),
            gt: (p.gates != GatePolicy::default()).then(|| p.gates.clone()),
            ap: p.approval.clone(),
            ov: p.overridden,
            rv: p.revision,
            wn: p.warnings.clone(),
            wa: p.warnings_acknowledged_at,
            dpk: p.due_at.map(|_| DUE_PARTITION.to_string()),
            dat: p.due_at,
            gpk: format!("A#{}", p.account),
            gsk: format!("{:013}#{}", p.created_at, p.id),
        }
    }

    fn into_domain(mut self) -> Result<Production, StoreError> {
        let mut phases = Vec::with_capacity(self.po.len());
        for name in &self.po {
            let s = self.ph.remove(name).ok_or_else(|| {
                StoreError::Corrupt(format!("production {}: phase {name} missing", self.id))
            })?;
            phases.push(PhaseState {
                name: name.clone(),
                status: s.s,
                attempt: s.a,
                queued_at: s.qa,
                started_at: s.sa,
                lease_until: s.lu,
                finished_at: s.fa,
                error_count: s.ec,
                last_error: s.le.map(|e| PhaseError {
                    code: e.c,
                    class: e.k,
                    detail: e.d,
                    attempt: e.a,
                    at: e.t,
                    provider_status: e.ps,
                }),
                output: s.o,
                feedback: s.fb,
            });
        }
        Ok(Production {
            id: self.id,
            account: self.acct,
            pipeline: self.pl,
            status: self.st,
            version: self.v,
            phases,
            trace_id: self.tr,
            created_at: self.ca,
            updated_at: self.ua,
            gates: self.gt.unwrap_or_default(),
            approval: self.ap,
            overridden: self.ov,
            revision: self.rv,
            warnings: self.wn,
            warnings_acknowledged_at: self.wa,
            due_at: self.dat,
        })
    }
}

impl StoredProduction {
    /// Redacts every free text the item carries (error details, feedback, audit details);
    /// returns where a known secret format was found.
    fn redact(&mut self) -> Vec<String> {
        let mut leaks = Vec::new();
        let mut scrub = |text: &mut String, place: String| {
            let r = crate::redact::redact(text);
            for kind in &r.leaks {
                leaks.push(format!("{kind} in {place}"));
            }
            *text = r.text;
        };
        for (name, ph) in self.ph.iter_mut() {
            if let Some(e) = ph.le.as_mut() {
                scrub(&mut e.d, format!("phase {name} error detail"));
            }
            if let Some(f) = ph.fb.as_mut() {
                scrub(f, format!("phase {name} feedback"));
            }
        }
        for e in self.au.iter_mut() {
            scrub(&mut e.d, format!("audit {} detail", e.t));
        }
        for w in self.wn.iter_mut() {
            scrub(w, "a warning".into());
        }
        leaks
    }
}

/// Serialised size of an item as DynamoDB bills it (names + values), for benchmarks.
pub fn item_size(item: &Item) -> usize {
    fn value_size(v: &AttributeValue) -> usize {
        match v {
            AttributeValue::S(s) => s.len(),
            AttributeValue::N(n) => n.len().div_ceil(2) + 1,
            AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
            AttributeValue::B(b) => b.as_ref().len(),
            AttributeValue::M(m) => {
                3 + m
                    .iter()
                    .map(|(k, v)| k.len() + value_size(v) + 1)
                    .sum::<usize>()
            }
            AttributeValue::L(l) => 3 + l.iter().map(|v| value_size(v) + 1).sum::<usize>(),
            AttributeValue::Ss(s) => s.iter().map(String::len).sum(),
            AttributeValue::Ns(s) => s.iter().map(|n| n.len()).sum(),
            AttributeValue::Bs(s) => s.iter().map(|b| b.as_ref().len()).sum(),
            _ => 0,
        }
    }
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

/// The hot item of a transition, as it would be written; for benchmarks and tests.
pub fn hot_item(t: &Transition, actor: &Actor) -> Item {
    serde_dynamo::to_item(StoredProduction::from_domain(
        &t.production,
        &t.audit,
        actor,
    ))
    .expect("hot item serialises")
}

fn decode(item: Item) -> Result<Production, StoreError> {
    let stored: StoredProduction =
        serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    stored.into_domain()
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A conditional write's result: applied (`true`), its condition false (`false`), or a
/// store failure.
fn applied<T, E, R>(
    res: Result<T, aws_smithy_runtime_api::client::result::SdkError<E, R>>,
) -> Result<bool, StoreError>
where
    E: std::error::Error + aws_smithy_types::error::metadata::ProvideErrorMetadata + 'static,
    R: std::fmt::Debug + 'static,
{
    match res {
        Ok(_) => Ok(true),
        Err(e)
            if e.as_service_error().and_then(|se| se.code())
                == Some("ConditionalCheckFailedException") =>
        {
            Ok(false)
        }
        Err(e) => Err(StoreError::Unavailable(sdk_error(&e))),
    }
}

fn status_value(st: impl Serialize) -> AttributeValue {
    serde_dynamo::to_attribute_value(st).expect("status serialises")
}

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn brief_item(id: &str, brief: &Brief) -> Item {
        let mut item = Self::key(production_pk(id), "B");
        let body = serde_json::to_string(brief).expect("brief serialises");
        item.insert("body".into(), s(body));
        item
    }

    fn key(pk: String, sk: &str) -> Item {
        HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
    }

    fn account_key(account: &str) -> Item {
        Self::key(format!("ACCT#{account}"), "A")
    }

    /// The reservation `create` makes: the month's counter + 1 and the production in the
    /// account's active set, on condition that neither limit is reached.
    fn reserve(&self, id: &str, r: &crate::limits::Reservation) -> aws_sdk_dynamodb::types::Update {
        let month = format!("m_{}", r.month.replace('-', "_"));
        let unlimited = i64::from(u32::MAX);
        aws_sdk_dynamodb::types::Update::builder()
            .table_name(&self.table)
            .set_key(Some(Self::account_key(&r.account)))
            .update_expression("ADD #m :one, active :ids")
            .condition_expression(
                "((attribute_not_exists(allow) AND (attribute_not_exists(#m) OR #m < :dallow)) \
                   OR (attribute_exists(allow) AND (attribute_not_exists(#m) OR #m < allow))) \
                 AND (attribute_not_exists(active) \
                   OR (attribute_not_exists(maxc) AND size(active) < :dmaxc) \
                   OR (attribute_exists(maxc) AND size(active) < maxc))",
            )
            .expression_attribute_names("#m", month)
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":ids", AttributeValue::Ss(vec![id.to_string()]))
            .expression_attribute_values(
                ":dallow",
                n(r.defaults.monthly_allowance.map_or(unlimited, i64::from)),
            )
            .expression_attribute_values(
                ":dmaxc",
                n(r.defaults.max_concurrent.map_or(unlimited, i64::from)),
            )
            .build()
            .expect("update has table, key and expression")
    }

    async fn account_impl(
        &self,
        account: &str,
        month: &str,
        defaults: crate::limits::Limits,
    ) -> Result<crate::limits::AccountUsage, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::account_key(account)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(sdk_error(&e)))?;
        let item = out.item.unwrap_or_default();
        let num = |k: &str| {
            item.get(k)
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<u32>().ok())
        };
        let own = crate::limits::Limits {
            monthly_allowance: num("allow"),
            max_concurrent: num("maxc"),
        };
        let mut active: Vec<String> = item
            .get("active")
            .and_then(|v| v.as_ss().ok())
            .cloned()
            .unwrap_or_default();
        active.sort();
        Ok(crate::limits::AccountUsage {
            account: account.into(),
            month: month.into(),
            started_this_month: num(&format!("m_{}", month.replace('-', "_"))).unwrap_or(0),
            own,
            effective: crate::limits::Limits {
                monthly_allowance: own.monthly_allowance.or(defaults.monthly_allowance),
                max_concurrent: own.max_concurrent.or(defaults.max_concurrent),
            },
            active,
        })
    }

    async fn set_limits_impl(
        &self,
        account: &str,
        limits: crate::limits::Limits,
    ) -> Result<(), StoreError> {
        let mut set = Vec::new();
        let mut remove = Vec::new();
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::account_key(account)));
        for (attr, value) in [
            ("allow", limits.monthly_allowance),
            ("maxc", limits.max_concurrent),
        ] {
            match value {
                Some(v) => {
                    set.push(format!("{attr} = :{attr}"));
                    req = req.expression_attribute_values(format!(":{attr}"), n(v));
                }
                None => remove.push(attr.to_string()),
            }
        }
        let mut expr = String::new();
        if !set.is_empty() {
            expr.push_str(&format!("SET {}", set.join(", ")));
        }
        if !remove.is_empty() {
            expr.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        req.update_expression(expr.trim())
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(sdk_error(&e)))?;
        Ok(())
    }

    async fn create_impl(
        &self,
        t: &Transition,
        brief: &Brief,
        actor: &Actor,
        reservation: &crate::limits::Reservation,
    ) -> Result<(), StoreError> {
        let p = &t.production;
        let (hot, leaks) = self.hot(t, actor)?;
        let brief_item = Self::brief_item(&p.id, brief);
        let put = |item: Item| {
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .expect("put has table and item")
        };
        let res = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put(hot)).build())
            .transact_items(TransactWriteItem::builder().put(put(brief_item)).build())
            .transact_items(
                TransactWriteItem::builder()
                    .update(self.reserve(&p.id, reservation))
                    .build(),
            )
            .send()
            .await;
        match res {
            Ok(_) => {
                self.leaked(&p.id, leaks, p.updated_at).await;
                Ok(())
            }
            Err(e) => {
                // Which item's condition failed: the production's (it exists) or the
                // account's (a limit).
                let reasons: Vec<Option<String>> = e
                    .as_service_error()
                    .and_then(|se| match se {
                        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) => {
                            Some(c.cancellation_reasons().iter().map(|r| r.code().map(String::from)).collect())
                        }
                        _ => None,
                    })
                    .unwrap_or_default();
                let failed = |i: usize| {
                    reasons
                        .get(i)
                        .and_then(|r| r.as_deref())
                        .is_some_and(|c| c == "ConditionalCheckFailed")
                };
                if failed(2) && !failed(0) {
                    Err(StoreError::LimitReached)
                } else if failed(0) || failed(1) {
                    Err(StoreError::AlreadyExists(p.id.clone()))
                } else {
                    Err(StoreError::Unavailable(sdk_error(&e)))
                }
            }
        }
    }

    /// The hot item to write, redacted, and where known secret formats were removed.
    fn hot(&self, t: &Transition, actor: &Actor) -> Result<(Item, Vec<String>), StoreError> {
        let mut stored = StoredProduction::from_domain(&t.production, &t.audit, actor);
        let leaks = stored.redact();
        let item = serde_dynamo::to_item(stored).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok((item, leaks))
    }

    /// After a write that had to redact a known secret format: a critical alarm.
    async fn leaked(&self, id: &str, leaks: Vec<String>, now: Millis) {
        if leaks.is_empty() {
            return;
        }
        let alarm = crate::alarms::Raise {
            kind: "secret_leak_detected".into(),
            subject: id.into(),
            severity: crate::alarms::Severity::Critical,
            detail: format!("redacted before storing: {}", leaks.join("; ")),
        };
        tracing::error!(production = %id, detail = %alarm.detail, "secret leak detected and redacted");
        if let Err(e) = self.raise_impl(&alarm, now).await {
            tracing::error!(production = %id, error = %e, "could not record the secret_leak_detected alarm");
        }
    }

    async fn get_impl(&self, id: &str) -> Result<Option<Production>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(production_pk(id), "P")))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(sdk_error(&e)))?;
        out.item.map(decode).transpose()
    }

    async fn claim_impl(
        &self,
        id: &str,
        phase: &str,
        attempt: u32,
        lease_until: Millis,
        now: Millis,
    ) -> Result<ClaimOutcome, StoreError> {
        // Mirrors domain::claim_refusal: same attempt; the phase queued; the production
        // queued or running. One request, no read. (An expired lease is refused too: the
        // runtime reconciles it, see PhaseRuntime::refused.)
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(production_pk(id), "P")))
            .update_expression(
                "SET ph.#p.s = :running, ph.#p.sa = :now, ph.#p.lu = :lease, st = :running, \
                 v = v + :one, ua = :now REMOVE au, dpk, dat",
            )
            .condition_expression(
                "attribute_exists(pk) AND ph.#p.a = :attempt AND (st = :queued OR st = :running) \
                 AND ph.#p.s = :queued",
            )
            .expression_attribute_names("#p", phase)
            .expression_attribute_values(":running", status_value(PhaseStatus::Running))
            .expression_attribute_values(":queued", status_value(PhaseStatus::Queued))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":lease", n(lease_until))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":attempt", n(attempt))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match res {
            Ok(out) => {
                let item = out
                    .attributes
                    .ok_or_else(|| StoreError::Corrupt("claim returned no item".into()))?;
                Ok(ClaimOutcome::Claimed(decode(item)?))
            }
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(c)) => Ok(
                    ClaimOutcome::Refused(c.item.clone().map(decode).transpose()?),
                ),
                // A message naming a phase the production does not have fails the path.
                Some(se) if se.meta().code() == Some("ValidationException") => {
                    Ok(ClaimOutcome::Refused(self.get_impl(id).await?))
                }
                _ => Err(StoreError::Unavailable(sdk_error(&e))),
            },
        }
    }

    async fn commit_impl(
        &self,
        t: &Transition,
        actor: &Actor,
    ) -> Result<CommitOutcome, StoreError> {
        let (item, leaks) = self.hot(t, actor)?;
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("v = :expected")
            .expression_attribute_values(":expected", n(t.production.version - 1))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match res {
            Ok(_) => {
                self.leaked(&t.production.id, leaks, t.production.updated_at)
                    .await;
                Ok(CommitOutcome::Committed)
            }
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(c)) => Ok(
                    CommitOutcome::Conflict(c.item.clone().map(decode).transpose()?.map(Box::new)),
                ),
                _ => Err(StoreError::Unavailable(sdk_error(&e))),
            },
        }
    }

    async fn commit_with_brief_impl(
        &self,
        t: &Transition,
        brief: &Brief,
        actor: &Actor,
    ) -> Result<CommitOutcome, StoreError> {
        let p = &t.production;
        let (hot, leaks) = self.hot(t, actor)?;
        let brief_item = Self::brief_item(&p.id, brief);
        let state = Put::builder()
            .table_name(&self.table)
            .set_item(Some(hot))
            .condition_expression("v = :expected")
            .expression_attribute_values(":expected", n(p.version - 1))
            .build()
            .expect("put complete");
        let brief_put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(brief_item))
            .condition_expression("attribute_exists(pk)")
            .build()
            .expect("put complete");
        let res = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(state).build())
            .transact_items(TransactWriteItem::builder().put(brief_put).build())
            .send()
            .await;
        match res {
            Ok(_) => {
                self.leaked(&p.id, leaks, p.updated_at).await;
                Ok(CommitOutcome::Committed)
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_transaction_canceled_exception()) =>
            {
                Ok(CommitOutcome::Conflict(
                    self.get_impl(&p.id).await?.map(Box::new),
                ))
            }
            Err(e) => Err(StoreError::Unavailable(sdk_error(&e))),
        }
    }

    async fn get_body(&self, pk: String, sk: &str) -> Result<Option<String>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(sdk_error(&e)))?;
        Ok(out
            .item
            .and_then(|mut i| i.remove("body"))
            .and_then(|b| b.as_s().ok().cloned()))
    }

    /// Alarms live in the state table (`pk = ALARM#<type>#<subject>`), listed through the
    /// KEYS_ONLY `by_account` index under the fixed key `ALARMS`.
    async fn health_impl(&self, id: &str) -> Result<Health, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(format!("INT#{id}"), "I")))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(sdk_error(&e)))?;
        match out.item {
            None => Ok(Health::new(id)),
            Some(item) => serde_dynamo::from_item(item)
                .map_err(|e| StoreError::Corrupt(format!("integration {id}: {e}"))),
        }
    }

    async fn put_health_impl(&self, h: &Health) -> Result<bool, StoreError> {
        let mut item: Item =
            serde_dynamo::to_item(h).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        item.extend(Self::key(format!("INT#{}", h.id), "I"));
        let req = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        let req = if h.version <= 1 {
            req.condition_expression("attribute_not_exists(pk)")
        } else {
            req.condition_expression("#v = :v")
                .expression_attribute_names("#v", "version")
                .expression_attribute_values(":v", n(h.version - 1))
        };
        applied(req.send().await)
    }

    async fn raise_impl(&self, a: &crate::alarms::Raise, now: Millis) -> Result<(), StoreError> {
        let id = format!("{}#{}", a.kind, a.subject);
        let severity = serde_json::to_value(a.severity).expect("severity serialises");
        let detail = crate::redact::redact(&a.detail).text;
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(format!("ALARM#{id}"), "A")))
            .update_expression(
                "SET #t = :t, subj = :s, sev = :sev, det = :d, ls = :now, fs = if_not_exists(fs, :now), \
                 #st = :open, gpk = :g, gsk = :id REMOVE hb ADD #c :one",
            )
            .expression_attribute_names("#t", "type")
            .expression_attribute_names("#st", "status")
            .expression_attribute_names("#c", "count")
            .expression_attribute_values(":t", s(&a.kind))
            .expression_attribute_values(":s", s(&a.subject))
            .expression_attribute_values(":sev", s(severity.as_str().unwrap_or("warning")))
            .expression_attribute_values(":d", s(detail))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":open", s("open"))
            .expression_attribute_values(":g", s("ALARMS"))
            .expression_attribute_values(":id", s(&id))
            .expression_attribute_values(":one", n(1))
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(sdk_error(&e)))?;
        Ok(())
    }

    async fn alarms_impl(&self) -> Result<Vec<crate::alarms::Alarm>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name("by_account")
            .key_condition_expression("gpk = :g")
            .expression_attribute_values(":g", s("ALARMS"))
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(sdk_error(&e)))?;
        let mut alarms = Vec::new();
        for key in out.items() {
            let Some(pk) = key.get("pk").and_then(|v| v.as_s().ok()) else {
                continue;
            };
            let got = self
                .client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(Self::key(pk.clone(), "A")))
                .send()
                .await
                .map_err(|e| StoreError::Unavailable(sdk_error(&e)))?;
            let Some(i) = got.item else { continue };
            let text = |k: &str| {
                i.get(k)
                    .and_then(|v| v.as_s().ok())
                    .cloned()
                    .unwrap_or_default()
            };
            let num = |k: &str| {
                i.get(k)
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or(0)
            };
            let corrupt = |e: serde_json::Error| StoreError::Corrupt(format!("alarm {pk}: {e}"));
            alarms.push(crate::alarms::Alarm {
                kind: text("type"),
                subject: text("subj"),
                severity: serde_json::from_value(text("sev").into()).map_err(corrupt)?,
                status: serde_json::from_value(text("status").into()).map_err(corrupt)?,
                count: num("count") as u64,
                first_seen: num("fs"),
                last_seen: num("ls"),
                detail: text("det"),
                handled_by: i.get("hb").and_then(|v| v.as_s().ok()).cloned(),
            });
        }
        alarms.sort_by_key(|a| std::cmp::Reverse(a.last_seen));
        Ok(alarms)
    }

    async fn set_alarm_status_impl(
        &self,
        id: &str,
        status: crate::alarms::AlarmStatus,
        actor: &Actor,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let value = serde_json::to_value(status).expect("status serialises");
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(format!("ALARM#{id}"), "A")))
            .update_expression("SET #st = :st, hb = :by, ha = :now")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":st", s(value.as_str().unwrap_or("open")))
            .expression_attribute_values(":by", s(&actor.0))
            .expression_attribute_values(":now", n(now))
            .send()
            .await;
        applied(res)
    }

    async fn due_impl(&self, now: Millis, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name("by_due")
                .key_condition_expression("dpk = :d AND dat <= :now")
                .expression_attribute_values(":d", s(DUE_PARTITION))
                .expression_attribute_values(":now", n(now))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| StoreError::Unavailable(sdk_error(&e)))?;
            for key in out.items() {
                if let Some(id) = key
                    .get("pk")
                    .and_then(|v| v.as_s().ok())
                    .and_then(|pk| pk.strip_prefix("P#"))
                {
                    ids.push(id.to_string());
                }
            }
            start = out.last_evaluated_key;
            if start.is_none() || ids.len() >= limit {
                ids.truncate(limit);
                return Ok(ids);
            }
        }
    }

    async fn list_impl(
        &self,
        account: &str,
        status: Option<crate::domain::ProductionStatus>,
        limit: usize,
    ) -> Result<Vec<Production>, StoreError> {
        let limit = limit.clamp(1, 1000);
        let mut found = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name("by_account")
                .key_condition_expression("gpk = :a")
                .expression_attribute_values(":a", s(format!("A#{account}")))
                .scan_index_forward(false)
                .limit(limit.min(100) as i32)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| StoreError::Unavailable(sdk_error(&e)))?;
            for key in out.items() {
                let id = key
                    .get("pk")
                    .and_then(|v| v.as_s().ok())
                    .and_then(|pk| pk.strip_prefix("P#"))
                    .unwrap_or_default();
                if let Some(p) = self.get_impl(id).await?
                    && status.is_none_or(|s| s == p.status)
                {
                    found.push(p);
                    if found.len() >= limit {
                        return Ok(found);
                    }
                }
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(found);
            }
        }
    }
}

impl Store for DynamoStore {
    fn create<'a>(
        &'a self,
        t: &'a Transition,
        brief: &'a Brief,
        actor: &'a Actor,
        reservation: &'a crate::limits::Reservation,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.create_impl(t, brief, actor, reservation).boxed()
    }
    fn account<'a>(
        &'a self,
        account: &'a str,
        month: &'a str,
        defaults: crate::limits::Limits,
    ) -> BoxFuture<'a, Result<crate::limits::AccountUsage, StoreError>> {
        self.account_impl(account, month, defaults).boxed()
    }
    fn set_limits<'a>(
        &'a self,
        account: &'a str,
        limits: crate::limits::Limits,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.set_limits_impl(account, limits).boxed()
    }
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Production>, StoreError>> {
        self.get_impl(id).boxed()
    }
    fn claim<'a>(
        &'a self,
        id: &'a str,
        phase: &'a str,
        attempt: u32,
        lease_until: Millis,
        now: Millis,
    ) -> BoxFuture<'a, Result<ClaimOutcome, StoreError>> {
        self.claim_impl(id, phase, attempt, lease_until, now)
            .boxed()
    }
    fn commit<'a>(
        &'a self,
        t: &'a Transition,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<CommitOutcome, StoreError>> {
        self.commit_impl(t, actor).boxed()
    }
    fn commit_with_brief<'a>(
        &'a self,
        t: &'a Transition,
        brief: &'a Brief,
        actor: &'a Actor,
    ) -> BoxFuture<'a, Result<CommitOutcome, StoreError>> {
        self.commit_with_brief_impl(t, brief, actor).boxed()
    }
    fn get_brief<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Brief>, StoreError>> {
        async move {
            match self.get_body(production_pk(id), "B").await? {
                Some(body) => serde_json::from_str(&body)
                    .map(Some)
                    .map_err(|e| StoreError::Corrupt(format!("brief of {id}: {e}"))),
                None => Ok(None),
            }
        }
        .boxed()
    }
    fn put_output<'a>(
        &'a self,
        id: &'a str,
        phase: &'a str,
        attempt: u32,
        body: &'a serde_json::Value,
    ) -> BoxFuture<'a, Result<String, StoreError>> {
        async move {
            let sk = format!("O#{phase}#{attempt}");
            let mut item = Self::key(production_pk(id), &sk);
            item.insert("body".into(), s(body.to_string()));
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .send()
                .await
                .map_err(|e| StoreError::Unavailable(sdk_error(&e)))?;
            Ok(sk)
        }
        .boxed()
    }
    fn get_output<'a>(
        &'a self,
        id: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<serde_json::Value>, StoreError>> {
        async move {
            match self.get_body(production_pk(id), key).await? {
                Some(body) => serde_json::from_str(&body)
                    .map(Some)
                    .map_err(|e| StoreError::Corrupt(format!("output {key} of {id}: {e}"))),
                None => Ok(None),
            }
        }
        .boxed()
    }
    fn list<'a>(
        &'a self,
        account: &'a str,
        status: Option<crate::domain::ProductionStatus>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Production>, StoreError>> {
        self.list_impl(account, status, limit).boxed()
    }
    fn due<'a>(
        &'a self,
        now: Millis,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        self.due_impl(now, limit).boxed()
    }
    fn raise_alarm<'a>(
        &'a self,
        alarm: &'a crate::alarms::Raise,
        now: Millis,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.raise_impl(alarm, now).boxed()
    }
    fn alarms<'a>(&'a self) -> BoxFuture<'a, Result<Vec<crate::alarms::Alarm>, StoreError>> {
        self.alarms_impl().boxed()
    }
    fn health<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Health, StoreError>> {
        self.health_impl(id).boxed()
    }
    fn put_health<'a>(&'a self, h: &'a Health) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.put_health_impl(h).boxed()
    }
    fn set_alarm_status<'a>(
        &'a self,
        id: &'a str,
        status: crate::alarms::AlarmStatus,
        actor: &'a Actor,
        now: Millis,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.set_alarm_status_impl(id, status, actor, now).boxed()
    }
}

/// Tool-call outcomes in the idempotency table (`pk` = call key, `ttl` in epoch seconds).
#[derive(Clone)]
pub struct DynamoOutcomes {
    client: Client,
    table: String,
}

impl DynamoOutcomes {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

impl Outcomes for DynamoOutcomes {
    fn get<'a>(
        &'a self,
        key: &'a str,
        now: Millis,
    ) -> BoxFuture<'a, Result<Option<Outcome>, StoreError>> {
        async move {
            let out = self
                .client
                .get_item()
                .table_name(&self.table)
                .key("pk", s(key))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| StoreError::Unavailable(sdk_error(&e)))?;
            let Some(item) = out.item else {
                return Ok(None);
            };
            let text = |k: &str| {
                item.get(k)
                    .and_then(|v| v.as_s().ok())
                    .cloned()
                    .unwrap_or_default()
            };
            // DynamoDB deletes expired items late (and the emulator never): ignore them here.
            let ttl = item
                .get("ttl")
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse::<i64>().ok())
                .unwrap_or(i64::MAX);
            if ttl.saturating_mul(1000) <= now {
                return Ok(None);
            }
            let num = |k: &str| {
                item.get(k)
                    .and_then(|v| v.as_n().ok())
                    .and_then(|n| n.parse::<i64>().ok())
                    .unwrap_or(0)
            };
            let status = match text("st").as_str() {
                "in_progress" => OutcomeStatus::InProgress {
                    attempt: num("at") as u32,
                    lease_until: num("lu"),
                },
                "failed" => OutcomeStatus::Failed,
                _ => OutcomeStatus::Completed,
            };
            Ok(Some(Outcome {
                request_hash: text("rh"),
                status,
                result: text("res"),
            }))
        }
        .boxed()
    }
    fn put<'a>(
        &'a self,
        key: &'a str,
        outcome: &'a Outcome,
        expires_at: Millis,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let req = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(key))
                .item("rh", s(&outcome.request_hash))
                .item("res", s(&outcome.result))
                .item("ttl", n(expires_at / 1000));
            let req = match outcome.status {
                OutcomeStatus::InProgress {
                    attempt,
                    lease_until,
                } => req
                    .item("st", s("in_progress"))
                    .item("at", n(attempt))
                    .item("lu", n(lease_until)),
                OutcomeStatus::Completed => req.item("st", s("completed")),
                OutcomeStatus::Failed => req.item("st", s("failed")),
            };
            req.send()
                .await
                .map_err(|e| StoreError::Unavailable(sdk_error(&e)))?;
            Ok(())
        }
        .boxed()
    }
}
