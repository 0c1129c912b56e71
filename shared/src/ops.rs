//! Operator operations, shared by the CLI (and later the HTTP API): start, show, list.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::adapters::{DynamoStore, SqsQueue};
use crate::domain::{Brief, BriefError, Production, start};
use crate::phases::{CONTENT_PIPELINE, CONTENT_PIPELINE_NAME};
use crate::ports::{Actor, Clock, OutMessage, Queue, Store, StoreError, SystemClock};
use crate::runtime::PhaseMessage;

/// Where a deployed (or local) stack keeps its resources. The template writes it to the SSM
/// parameter `/shepherd/<stack>/config`, so the CLI needs only the stack name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StackConfig {
    pub state_table: String,
    pub idempotency_table: String,
    pub audit_table: String,
    /// `phase=url,...`
    pub queues: String,
    pub dlqs: String,
}

impl StackConfig {
    pub fn parameter_name(stack: &str) -> String {
        format!("/shepherd/{stack}/config")
    }

    pub fn queue_map(&self) -> BTreeMap<String, String> {
        self.queues
            .split(',')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim().into(), v.trim().into()))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    InvalidBrief(#[from] BriefError),
    #[error("production {0} not found")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "production {id} was created but its first message could not be sent ({reason}); \
         the recovery sweep will dispatch it"
    )]
    DispatchFailed { id: String, reason: String },
    #[error("stack configuration: {0}")]
    Config(String),
}

pub struct Ops {
    store: Arc<dyn Store>,
    queue: Arc<dyn Queue>,
    clock: Arc<dyn Clock>,
    queues: BTreeMap<String, String>,
}

impl Ops {
    pub fn new(
        store: Arc<dyn Store>,
        queue: Arc<dyn Queue>,
        clock: Arc<dyn Clock>,
        queues: BTreeMap<String, String>,
    ) -> Self {
        Self {
            store,
            queue,
            clock,
            queues,
        }
    }

    /// Reads the stack's configuration from SSM and builds the AWS adapters.
    pub async fn connect(
        sdk: &aws_config::SdkConfig,
        stack: &str,
    ) -> Result<(Self, StackConfig), OpsError> {
        let name = StackConfig::parameter_name(stack);
        let ssm = aws_sdk_ssm::Client::new(sdk);
        let value = ssm
            .get_parameter()
            .name(&name)
            .send()
            .await
            .map_err(|e| {
                OpsError::Config(format!(
                    "could not read {name} (is the stack {stack:?} deployed or the local stack up?): {}",
                    crate::adapters::sdk_error(&e)
                ))
            })?
            .parameter
            .and_then(|p| p.value)
            .unwrap_or_default();
        let config: StackConfig = serde_json::from_str(&value)
            .map_err(|e| OpsError::Config(format!("{name} is not a stack configuration: {e}")))?;
        let ops = Self::new(
            Arc::new(DynamoStore::new(
                aws_sdk_dynamodb::Client::new(sdk),
                &config.state_table,
            )),
            Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(sdk))),
            Arc::new(SystemClock),
            config.queue_map(),
        );
        Ok((ops, config))
    }

    /// Validates the brief, creates the production and sends its first phase's message.
    pub async fn start(&self, brief_json: &str, actor: &Actor) -> Result<Production, OpsError> {
        let brief = Brief::parse(brief_json)?;
        let id = uuid::Uuid::now_v7().to_string();
        let trace = uuid::Uuid::now_v7().simple().to_string();
        let t = start(
            id.clone(),
            brief.account.clone(),
            CONTENT_PIPELINE_NAME.into(),
            &CONTENT_PIPELINE,
            trace,
            self.clock.now(),
        );
        self.store.create(&t, &brief, actor).await?;
        let d = t
            .dispatch
            .as_ref()
            .expect("start dispatches the first phase");
        let url = self
            .queues
            .get(&d.phase)
            .ok_or_else(|| OpsError::DispatchFailed {
                id: id.clone(),
                reason: format!("no queue for phase {}", d.phase),
            })?;
        let msg = OutMessage {
            id: "start".into(),
            body: PhaseMessage::new(&id, &d.phase, d.attempt).to_body(),
            attributes: vec![],
        };
        match self.queue.send_batch(url, std::slice::from_ref(&msg)).await {
            Ok(failed) if failed.is_empty() => Ok(t.production),
            Ok(_) => Err(OpsError::DispatchFailed {
                id,
                reason: "SQS refused the message".into(),
            }),
            Err(e) => Err(OpsError::DispatchFailed {
                id,
                reason: e.to_string(),
            }),
        }
    }

    pub async fn get(&self, id: &str) -> Result<Production, OpsError> {
        self.store
            .get(id)
            .await?
            .ok_or_else(|| OpsError::NotFound(id.into()))
    }

    /// The production with every succeeded phase's output.
    pub async fn outputs(
        &self,
        p: &Production,
    ) -> Result<BTreeMap<String, serde_json::Value>, OpsError> {
        let mut out = BTreeMap::new();
        for ph in &p.phases {
            if let Some(key) = &ph.output
                && let Some(v) = self.store.get_output(&p.id, key).await?
            {
                out.insert(ph.name.clone(), v);
            }
        }
        Ok(out)
    }

    pub async fn list(&self, account: &str, limit: usize) -> Result<Vec<Production>, OpsError> {
        Ok(self.store.list(account, limit).await?)
    }
}
