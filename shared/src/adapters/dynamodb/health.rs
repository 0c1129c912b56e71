//! Integrations' health (`INT#<id>` / `I`), written only when it changes.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;

use super::{Item, applied, get_item, key, n};
use crate::domain::health::Health;
use crate::ports::{HealthStore, StoreError};

#[derive(Clone)]
pub struct DynamoHealth {
    client: Client,
    table: String,
}

impl DynamoHealth {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

#[async_trait]
impl HealthStore for DynamoHealth {
    async fn get(&self, id: &str) -> Result<Health, StoreError> {
        let item = get_item(&self.client, &self.table, key(format!("INT#{id}"), "I")).await?;
        match item {
            None => Ok(Health::new(id)),
            Some(item) => serde_dynamo::from_item(item)
                .map_err(|e| StoreError::Corrupt(format!("integration {id}: {e}"))),
        }
    }

    async fn put(&self, h: &Health) -> Result<bool, StoreError> {
        let mut item: Item =
            serde_dynamo::to_item(h).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        item.extend(key(format!("INT#{}", h.id), "I"));
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
}
