use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use serde::{Deserialize, Serialize};

use super::{
    Item, accounts, get_item, key, listing_page, n, number, production_pk, query_all, s, text,
    unavailable,
};
use crate::domain::OverrideMark;
use crate::domain::limits::Reservation;
use crate::domain::{
    Actor, Approval, AuditEvent, AuditKind, ErrorClass, ErrorCode, GatePolicy, Millis, Outcome,
    PhaseError, PhaseState, PhaseStatus, Production, ProductionStatus, Transition,
};
use crate::ports::{
    ClaimOutcome, CommitOutcome, CommittedWrite, Page, Productions, StartKey, StoreError,
    UsedStartKey,
};

/// The hot item, with short attribute names: its size is the cost of every transition.
#[derive(Debug, Serialize, Deserialize)]
struct StoredProduction {
    pub pk: String,
    pub sk: String,
    pub id: String,
    pub acct: String,
    pub pl: String,
    /// The pipeline version it is pinned to (1 for productions from before versions).
    #[serde(default = "one")]
    pub plv: u32,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ov: Option<OverrideMark>,
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
    /// Listing by status (`by_status`, KEYS_ONLY): moves only when the status group does.
    pub spk: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredPhase {
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
    /// This attempt's retried errors and waits.
    #[serde(default, skip_serializing_if = "is_zero")]
    rt: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    hd: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    le: Option<StoredError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    o: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fb: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wt: Option<crate::domain::Wait>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredError {
    c: ErrorCode,
    k: ErrorClass,
    d: String,
    a: u32,
    t: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ps: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    i: Option<String>,
}

/// An audit event as carried in the hot item.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StoredAudit {
    pub t: AuditKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a: Option<u32>,
    pub o: Outcome,
    pub at: Millis,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub d: String,
    pub by: String,
}

/// One partition for the due index: the sweep's reads grow with what is due, which is
/// small by design. Shard it (`DUE#<n>`) if thousands are ever due at once.
const DUE_PARTITION: &str = "DUE";

fn one() -> u32 {
    1
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl StoredProduction {
    fn from_domain(p: &Production, audit: &[AuditEvent], actor: &Actor) -> Self {
        Self {
            pk: production_pk(&p.id),
            sk: "P".into(),
            id: p.id.clone(),
            acct: p.account.clone(),
            pl: p.pipeline.clone(),
            plv: p.pipeline_version,
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
                        rt: ph.retries,
                        hd: ph.holds,
                        le: ph.last_error.as_ref().map(|e| StoredError {
                            c: e.code.clone(),
                            k: e.class,
                            d: e.detail.clone(),
                            a: e.attempt,
                            t: e.at,
                            ps: e.provider_status,
                            i: e.integration.clone(),
                        }),
                        o: ph.output.clone(),
                        fb: ph.feedback.clone(),
                        wt: ph.waiting.clone(),
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
                    o: e.outcome,
                    at: e.at,
                    d: e.detail.clone(),
                    by: actor.0.clone(),
                })
                .collect(),
            gt: (p.gates != GatePolicy::default()).then(|| p.gates.clone()),
            ap: p.approval.clone(),
            ov: p.overridden.clone(),
            rv: p.revision,
            wn: p.warnings.clone(),
            wa: p.warnings_acknowledged_at,
            dpk: p.due_at.map(|_| DUE_PARTITION.to_string()),
            dat: p.due_at,
            gpk: format!("A#{}", p.account),
            spk: status_key(&p.account, p.status),
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
                retries: s.rt,
                holds: s.hd,
                last_error: s.le.map(|e| PhaseError {
                    code: e.c,
                    class: e.k,
                    detail: e.d,
                    attempt: e.a,
                    at: e.t,
                    provider_status: e.ps,
                    integration: e.i,
                }),
                output: s.o,
                feedback: s.fb,
                waiting: s.wt,
            });
        }
        Ok(Production {
            id: self.id,
            account: self.acct,
            pipeline: self.pl,
            pipeline_version: self.plv,
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

pub(super) fn decode(item: Item) -> Result<Production, StoreError> {
    let stored: StoredProduction =
        serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    stored.into_domain()
}

impl StoredAudit {
    pub(super) fn into_event(self) -> (AuditEvent, String) {
        let mut e = AuditEvent::new(self.t, self.o, self.at).detail(self.d);
        e.phase = self.p;
        e.attempt = self.a;
        (e, self.by)
    }
}

/// The parts of a hot item the stream's readers need (any serde_dynamo source: the SDK,
/// the Lambda stream event, the streams SDK).
#[derive(Debug, Deserialize)]
pub(super) struct StreamedProduction {
    id: String,
    acct: String,
    tr: String,
    v: u64,
    #[serde(default)]
    st: Option<ProductionStatus>,
    #[serde(default)]
    au: Vec<StoredAudit>,
}

impl StreamedProduction {
    /// The committed write, if it carried audit events (a claim carries none).
    pub(super) fn into_write(self) -> Option<CommittedWrite> {
        if self.au.is_empty() {
            return None;
        }
        let mut actor = String::new();
        let events = self
            .au
            .into_iter()
            .map(|a| {
                let (e, by) = a.into_event();
                actor = by;
                e
            })
            .collect();
        Some(CommittedWrite {
            production_id: self.id,
            account: self.acct,
            trace_id: self.tr,
            version: self.v,
            status: self.st,
            actor,
            events,
        })
    }
}

fn status_value(st: impl Serialize) -> AttributeValue {
    serde_dynamo::to_attribute_value(st).expect("status serialises")
}

/// Productions in the state table: the hot item, the input, and the two indexes.
#[derive(Clone)]
pub struct DynamoProductions {
    client: Client,
    table: String,
}

impl DynamoProductions {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// The production's input (sort key `B`, where the content brief always was).
    fn input_item(id: &str, input: &serde_json::Value) -> Item {
        let mut item = key(production_pk(id), "B");
        let body = serde_json::to_string(input).expect("input serialises");
        item.insert("body".into(), s(body));
        item
    }

    fn hot(t: &Transition, actor: &Actor) -> Result<Item, StoreError> {
        let stored = StoredProduction::from_domain(&t.production, &t.audit, actor);
        serde_dynamo::to_item(stored).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// The start key's item: held until `expires` (DynamoDB's TTL removes it later; the
    /// condition does not wait for that). A key is scoped by account.
    fn start_key_put(&self, k: &StartKey, production: &str, now: Millis) -> Put {
        let mut item = key(start_key_pk(&k.account, &k.key), "K");
        item.insert("production".into(), s(production));
        item.insert("brief_hash".into(), s(k.input_hash.clone()));
        item.insert("expires".into(), n(k.expires));
        item.insert("ttl".into(), n(k.expires / 1000 + 1));
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR expires <= :now")
            .expression_attribute_values(":now", n(now))
            .build()
            .expect("table and item are set")
    }

    fn put(&self, item: Item, condition: &str) -> Put {
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .build()
            .expect("put has table and item")
    }
}

#[async_trait]
impl Productions for DynamoProductions {
    async fn create(
        &self,
        t: &Transition,
        input: &serde_json::Value,
        actor: &Actor,
        reservation: &Reservation,
        start_key: Option<&StartKey>,
    ) -> Result<(), StoreError> {
        let p = &t.production;
        let hot = Self::hot(t, actor)?;
        let new = "attribute_not_exists(pk)";
        let mut tx = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(self.put(hot, new)).build())
            .transact_items(
                TransactWriteItem::builder()
                    .put(self.put(Self::input_item(&p.id, input), new))
                    .build(),
            )
            .transact_items(
                TransactWriteItem::builder()
                    .update(accounts::reserve(&self.table, &p.id, reservation))
                    .build(),
            );
        if let Some(k) = start_key {
            tx = tx.transact_items(
                TransactWriteItem::builder()
                    .put(self.start_key_put(k, &p.id, p.created_at))
                    .build(),
            );
        }
        let Err(e) = tx.send().await else {
            return Ok(());
        };
        // Which item's condition failed: the production's (it exists), the account's (a
        // limit) or the start key's (a repeat).
        use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError as E;
        let reasons: Vec<Option<String>> = match e.as_service_error() {
            Some(E::TransactionCanceledException(c)) => c
                .cancellation_reasons()
                .iter()
                .map(|r| r.code().map(String::from))
                .collect(),
            _ => vec![],
        };
        let failed = |i: usize| {
            reasons
                .get(i)
                .and_then(|r| r.as_deref())
                .is_some_and(|c| c == "ConditionalCheckFailed")
        };
        if let Some(k) = start_key.filter(|_| failed(3)) {
            // Held by a start that won the race: read who holds it (a consistent read).
            return match self.start_key(&k.account, &k.key, p.created_at).await? {
                Some(used) => Err(StoreError::StartKeyUsed(used)),
                None => Err(unavailable(e)),
            };
        }
        if failed(2) && !failed(0) {
            Err(StoreError::LimitReached)
        } else if failed(0) || failed(1) {
            Err(StoreError::AlreadyExists(p.id.clone()))
        } else {
            Err(unavailable(e))
        }
    }

    async fn start_key(
        &self,
        account: &str,
        key: &str,
        now: Millis,
    ) -> Result<Option<UsedStartKey>, StoreError> {
        let item = get_item(
            &self.client,
            &self.table,
            super::key(start_key_pk(account, key), "K"),
        )
        .await?;
        let Some(item) = item else {
            return Ok(None);
        };
        let (production, input_hash) = (text(&item, "production"), text(&item, "brief_hash"));
        if production.is_empty() || input_hash.is_empty() {
            return Err(StoreError::Corrupt(format!(
                "start key item {account}/{key} lacks its production"
            )));
        }
        let expires = number(&item, "expires").unwrap_or(0);
        Ok((expires > now).then_some(UsedStartKey {
            production,
            input_hash,
            expires,
        }))
    }

    async fn get(&self, id: &str) -> Result<Option<Production>, StoreError> {
        let item = get_item(&self.client, &self.table, key(production_pk(id), "P")).await?;
        item.map(decode).transpose()
    }

    async fn claim(
        &self,
        id: &str,
        phase: &str,
        attempt: u32,
        lease_until: Millis,
        now: Millis,
    ) -> Result<ClaimOutcome, StoreError> {
        // Mirrors domain::delivery::claim_refusal: same attempt; the phase queued; the
        // production queued or running. One request, no read. (An expired lease is refused
        // too: the runtime reconciles it.)
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(production_pk(id), "P")))
            .update_expression(
                "SET ph.#p.s = :running, ph.#p.sa = :now, ph.#p.lu = :lease, st = :running, \
                 v = v + :one, ua = :now, dpk = :due, dat = :lease REMOVE au",
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
            // Due when the lease expires (`domain::decide`'s `due_after`): the sweep
            // reconciles a worker that died holding it.
            .expression_attribute_values(":due", s(DUE_PARTITION))
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
                    Ok(ClaimOutcome::Refused(self.get(id).await?))
                }
                _ => Err(unavailable(e)),
            },
        }
    }

    async fn commit(
        &self,
        t: &Transition,
        actor: &Actor,
        input: Option<&serde_json::Value>,
    ) -> Result<CommitOutcome, StoreError> {
        let p = &t.production;
        let hot = Self::hot(t, actor)?;
        let Some(input) = input else {
            let res = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(hot))
                .condition_expression("v = :expected")
                .expression_attribute_values(":expected", n(p.version - 1))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            return match res {
                Ok(_) => Ok(CommitOutcome::Committed),
                Err(e) => match e.as_service_error() {
                    Some(PutItemError::ConditionalCheckFailedException(c)) => {
                        Ok(CommitOutcome::Conflict(
                            c.item.clone().map(decode).transpose()?.map(Box::new),
                        ))
                    }
                    _ => Err(unavailable(e)),
                },
            };
        };
        // Rare (an edit): the state and the input in one transaction.
        let state = Put::builder()
            .table_name(&self.table)
            .set_item(Some(hot))
            .condition_expression("v = :expected")
            .expression_attribute_values(":expected", n(p.version - 1))
            .build()
            .expect("put complete");
        let res = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(state).build())
            .transact_items(
                TransactWriteItem::builder()
                    .put(self.put(Self::input_item(&p.id, input), "attribute_exists(pk)"))
                    .build(),
            )
            .send()
            .await;
        match res {
            Ok(_) => Ok(CommitOutcome::Committed),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_transaction_canceled_exception()) =>
            {
                Ok(CommitOutcome::Conflict(
                    self.get(&p.id).await?.map(Box::new),
                ))
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn input(&self, id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        match super::get_body(&self.client, &self.table, production_pk(id), "B").await? {
            Some(body) => serde_json::from_str(&body)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("input of {id}: {e}"))),
            None => Ok(None),
        }
    }

    async fn list(
        &self,
        account: &str,
        status: Option<ProductionStatus>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<Production>, StoreError> {
        let (index, attr, partition) = match status {
            None => ("by_account", "gpk", format!("A#{account}")),
            Some(st) => ("by_status", "spk", status_key(account, st)),
        };
        let (keys, next) = listing_page(
            &self.client,
            &self.table,
            (index, attr, &partition),
            limit,
            after,
        )
        .await?;
        let mut items = Vec::with_capacity(keys.len());
        for id in keys.iter().filter_map(pk_id) {
            // The index lags the table a little: a production that has moved on since is
            // left out of this status's page.
            if let Some(p) = self.get(&id).await?
                && status.is_none_or(|s| s == p.status)
            {
                items.push(p);
            }
        }
        Ok(Page { items, next })
    }

    async fn due(&self, now: Millis, limit: usize) -> Result<Vec<String>, StoreError> {
        let req = self
            .client
            .query()
            .table_name(&self.table)
            .index_name("by_due")
            .key_condition_expression("dpk = :d AND dat <= :now")
            .expression_attribute_values(":d", s(DUE_PARTITION))
            .expression_attribute_values(":now", n(now));
        let mut ids = Vec::new();
        query_all(req, |key| {
            ids.extend(pk_id(&key));
            ids.len() < limit
        })
        .await?;
        ids.truncate(limit);
        Ok(ids)
    }

    /// Read by key, never by Scan: the accounts (each account item sits under `ACCOUNTS`
    /// in `by_status`), each account's open productions by status group (`by_status`), and
    /// their pipeline versions (`BatchGetItem`, 100 at a time, projected). Reads grow with
    /// the open productions in scope, not with the table.
    async fn open_by_version(
        &self,
        account: Option<&str>,
    ) -> Result<std::collections::BTreeMap<(String, u32), u64>, StoreError> {
        let accounts = match account {
            Some(a) => vec![a.to_string()],
            None => super::accounts::listed(&self.client, &self.table).await?,
        };
        let mut ids = Vec::new();
        for a in &accounts {
            for status in [
                ProductionStatus::Queued,
                ProductionStatus::Paused,
                ProductionStatus::AwaitingApproval,
                ProductionStatus::Failed,
                ProductionStatus::DeadLettered,
            ] {
                let req = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .index_name("by_status")
                    .key_condition_expression("spk = :s")
                    .expression_attribute_values(":s", s(status_key(a, status)));
                query_all(req, |key| {
                    ids.extend(pk_id(&key));
                    true
                })
                .await?;
            }
        }
        let mut counts = std::collections::BTreeMap::new();
        for chunk in ids.chunks(100) {
            let mut keys: Vec<Item> = chunk.iter().map(|id| key(production_pk(id), "P")).collect();
            while !keys.is_empty() {
                let got = self
                    .client
                    .batch_get_item()
                    .request_items(
                        &self.table,
                        aws_sdk_dynamodb::types::KeysAndAttributes::builder()
                            .set_keys(Some(std::mem::take(&mut keys)))
                            .consistent_read(true)
                            .projection_expression("#pl, #plv, #st")
                            .expression_attribute_names("#pl", "pl")
                            .expression_attribute_names("#plv", "plv")
                            .expression_attribute_names("#st", "st")
                            .build()
                            .expect("keys and projection"),
                    )
                    .send()
                    .await
                    .map_err(unavailable)?;
                for item in got
                    .responses()
                    .and_then(|r| r.get(&self.table))
                    .into_iter()
                    .flatten()
                {
                    // The index trails the table: one that settled since is not open.
                    let st = text(item, "st");
                    if st == ProductionStatus::Completed.as_str()
                        || st == ProductionStatus::Cancelled.as_str()
                    {
                        continue;
                    }
                    // Productions from before versions were written without one: version 1.
                    let version = item
                        .get("plv")
                        .and_then(|v| v.as_n().ok())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(1);
                    *counts.entry((text(item, "pl"), version)).or_insert(0) += 1;
                }
                // What DynamoDB did not get to this time (throughput), asked again.
                keys = got
                    .unprocessed_keys()
                    .and_then(|u| u.get(&self.table))
                    .map(|k| k.keys().to_vec())
                    .unwrap_or_default();
            }
        }
        Ok(counts)
    }
}

/// The production id of an index key (`pk = P#<id>`).
fn pk_id(key: &Item) -> Option<String> {
    key.get("pk")
        .and_then(|v| v.as_s().ok())
        .and_then(|pk| pk.strip_prefix("P#"))
        .map(String::from)
}

/// A production's `by_status` partition: queued and running share one (`active`), so a
/// claim, which moves a production from one to the other, never writes the index.
fn status_key(account: &str, status: ProductionStatus) -> String {
    let group = match status {
        ProductionStatus::Queued | ProductionStatus::Running => "active",
        other => other.as_str(),
    };
    format!("{account}#{group}")
}

/// The partition of a start key (an account's idempotency key for `POST /productions`).
fn start_key_pk(account: &str, key: &str) -> String {
    format!("start#{account}#{key}")
}
