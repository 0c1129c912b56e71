//! Phases' outputs (`P#<id>` / `O#<phase>#<attempt>`), apart from the hot item.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;

use super::{get_body, key, production_pk, s, unavailable};
use crate::ports::{Outputs, StoreError};

#[derive(Clone)]
pub struct DynamoOutputs {
    client: Client,
    table: String,
}

impl DynamoOutputs {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
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
        body: &serde_json::Value,
    ) -> Result<String, StoreError> {
        let sk = format!("O#{phase}#{attempt}");
        let mut item = key(production_pk(id), &sk);
        item.insert("body".into(), s(body.to_string()));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(sk)
    }

    async fn get(&self, id: &str, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        match get_body(&self.client, &self.table, production_pk(id), key).await? {
            Some(body) => serde_json::from_str(&body)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("output {key} of {id}: {e}"))),
            None => Ok(None),
        }
    }
}
