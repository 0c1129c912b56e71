use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};

use super::sdk_error;
use crate::ports::{InMessage, OutMessage, Queue, QueueError};

#[derive(Clone)]
pub struct SqsQueue {
    client: Client,
}

impl SqsQueue {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// One ReceiveMessage; `wait` > 0 is long polling (every server asked).
    async fn receive_waiting(
        &self,
        queue_url: &str,
        max: i32,
        visibility: i32,
        wait: i32,
    ) -> Result<Vec<InMessage>, QueueError> {
        use aws_sdk_sqs::types::MessageSystemAttributeName as A;
        let out = self
            .client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(max.clamp(1, 10))
            .visibility_timeout(visibility)
            .wait_time_seconds(wait)
            .message_system_attribute_names(A::SentTimestamp)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| QueueError(sdk_error(&e)))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| InMessage {
                sent_at: m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&A::SentTimestamp))
                    .and_then(|t| t.parse().ok()),
                attributes: m
                    .message_attributes
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|(k, v)| v.string_value.map(|s| (k, s)))
                    .collect(),
                id: m.message_id.unwrap_or_default(),
                body: m.body.unwrap_or_default(),
                receipt: m.receipt_handle.unwrap_or_default(),
            })
            .collect())
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn receive(
        &self,
        queue_url: &str,
        max: i32,
        visibility: i32,
    ) -> Result<Vec<InMessage>, QueueError> {
        self.receive_waiting(queue_url, max, visibility, 0).await
    }

    async fn receive_from_all(
        &self,
        queue_url: &str,
        max: i32,
        visibility: i32,
    ) -> Result<Vec<InMessage>, QueueError> {
        self.receive_waiting(queue_url, max, visibility, 1).await
    }

    async fn waiting(&self, queue_url: &str) -> Result<Option<u64>, QueueError> {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(|e| QueueError(sdk_error(&e)))?;
        Ok(out
            .attributes
            .and_then(|a| a.get(&A::ApproximateNumberOfMessages).cloned())
            .and_then(|n| n.parse().ok()))
    }

    async fn delete(&self, queue_url: &str, receipt: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(queue_url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| QueueError(sdk_error(&e)))?;
        Ok(())
    }

    async fn send_batch(
        &self,
        queue_url: &str,
        messages: &[OutMessage],
    ) -> Result<Vec<String>, QueueError> {
        let mut failed = Vec::new();
        for chunk in messages.chunks(10) {
            let entries = chunk
                .iter()
                .map(|m| {
                    let mut e = SendMessageBatchRequestEntry::builder()
                        .id(&m.id)
                        .message_body(&m.body)
                        .set_delay_seconds(m.delay.map(|d| d.min(900) as i32));
                    for (k, v) in &m.attributes {
                        e = e.message_attributes(
                            k,
                            MessageAttributeValue::builder()
                                .data_type("String")
                                .string_value(v)
                                .build()
                                .expect("attribute has type"),
                        );
                    }
                    e.build().expect("entry has id and body")
                })
                .collect();
            let out = self
                .client
                .send_message_batch()
                .queue_url(queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| QueueError(sdk_error(&e)))?;
            failed.extend(out.failed.into_iter().map(|f| f.id));
        }
        Ok(failed)
    }

    async fn change_visibility(
        &self,
        queue_url: &str,
        receipt_handle: &str,
        seconds: i32,
    ) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(seconds)
            .send()
            .await
            .map_err(|e| QueueError(sdk_error(&e)))?;
        Ok(())
    }
}
