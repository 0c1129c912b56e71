//! Phases' outputs (`P#<id>` / `O#<phase>#<attempt>`), apart from the hot item, with the
//! artifacts they reference. An output too large for a DynamoDB item (400 KB) is kept in
//! the artifact bucket as `output` and the item holds its reference.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;

use super::{get_item, key, n, number, production_pk, s, text, unavailable};
use crate::domain::artifacts::Artifact;
use crate::ports::{ArtifactStore, OutputPeek, Outputs, StoreError, StoredOutput};

/// Bodies above this go to the bucket (the item also holds its keys and artifact list).
pub const INLINE_LIMIT: usize = 300 * 1024;

#[derive(Clone)]
pub struct DynamoOutputs {
    client: Client,
    table: String,
    overflow: Arc<dyn ArtifactStore>,
}

impl DynamoOutputs {
    pub fn new(client: Client, table: impl Into<String>, overflow: Arc<dyn ArtifactStore>) -> Self {
        Self {
            client,
            table: table.into(),
            overflow,
        }
    }
}

#[async_trait]
impl Outputs for DynamoOutputs {
    async fn put(
        &self,
        id: &str,
        phase: &str,
        attempt: u32,
        output: &StoredOutput,
    ) -> Result<String, StoreError> {
        let sk = crate::domain::output_key(phase, attempt);
        let mut item = key(production_pk(id), &sk);
        let body = output.body.to_string();
        if body.len() > INLINE_LIMIT {
            let big = Artifact::of(id, "output", body.as_bytes(), "application/json");
            self.overflow
                .put_new(&big.key, body.as_bytes(), &big.content_type)
                .await?;
            item.insert("ref".into(), s(&big.key));
            item.insert("rb".into(), n(body.len()));
        } else {
            item.insert("body".into(), s(body));
        }
        if !output.artifacts.is_empty() {
            let arts = serde_json::to_string(&output.artifacts).expect("artifacts serialise");
            item.insert("arts".into(), s(arts));
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(sk)
    }

    async fn peek(&self, id: &str, key_: &str) -> Result<Option<OutputPeek>, StoreError> {
        let item = get_item(&self.client, &self.table, key(production_pk(id), key_)).await?;
        let Some(item) = item else {
            return Ok(None);
        };
        // Kept in the bucket and its size known (older items lack it): not downloaded.
        if let (Some(r), Some(bytes)) = (
            item.get("ref").and_then(|v| v.as_s().ok()),
            number(&item, "rb"),
        ) {
            let artifacts = match item.get("arts").and_then(|v| v.as_s().ok()) {
                Some(a) => serde_json::from_str(a)
                    .map_err(|e| StoreError::Corrupt(format!("output {key_} of {id}: {e}")))?,
                None => vec![],
            };
            return Ok(Some(OutputPeek::InBucket {
                key: r.to_string(),
                bytes: bytes as u64,
                artifacts,
            }));
        }
        Ok(self.get(id, key_).await?.map(OutputPeek::Whole))
    }

    async fn get(&self, id: &str, key_: &str) -> Result<Option<StoredOutput>, StoreError> {
        let item = get_item(&self.client, &self.table, key(production_pk(id), key_)).await?;
        let Some(item) = item else {
            return Ok(None);
        };
        let corrupt =
            |e: serde_json::Error| StoreError::Corrupt(format!("output {key_} of {id}: {e}"));
        let body = match item.get("ref").and_then(|v| v.as_s().ok()) {
            Some(r) => {
                let bytes = self.overflow.get(r).await?.ok_or_else(|| {
                    StoreError::Corrupt(format!("output {key_} of {id}: {r} is missing"))
                })?;
                serde_json::from_slice(&bytes).map_err(corrupt)?
            }
            None => serde_json::from_str(&text(&item, "body")).map_err(corrupt)?,
        };
        let artifacts = match item.get("arts").and_then(|v| v.as_s().ok()) {
            Some(a) => serde_json::from_str(a).map_err(corrupt)?,
            None => vec![],
        };
        Ok(Some(StoredOutput { body, artifacts }))
    }
}
