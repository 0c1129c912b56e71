//! The state table's stream, as the audit projector reads it: each new image of a
//! production item that carried audit events is one committed write.

use async_trait::async_trait;
use aws_sdk_dynamodbstreams::types::ShardIteratorType;

use crate::ports::{Change, CommittedWrite, StateStream, StoreError};

use super::productions::StreamedProduction;

/// The committed write of one stream image (any serde_dynamo item: the Lambda event's or
/// the streams SDK's); `None` for items that are not productions or carried no events
/// (claims).
pub fn committed_write(image: impl Into<serde_dynamo::Item>) -> Option<CommittedWrite> {
    match serde_dynamo::from_item::<_, StreamedProduction>(image) {
        Ok(p) => p.into_write(),
        Err(e) => {
            tracing::debug!(error = %e, "not a production item");
            None
        }
    }
}

/// What one stream image is for the webhook fan-out: a production write with events, an
/// alarm, or nothing (claims, deliveries, subscriptions, accounts).
pub fn change(image: impl Into<serde_dynamo::Item>) -> Option<Change> {
    let item: serde_dynamo::Item = image.into();
    let attrs: super::Item = item.clone().into();
    if super::text(&attrs, "pk").starts_with("ALARM#") {
        return match super::alarms::alarm_of(&attrs) {
            Ok(a) => Some(Change::Alarm(
                a,
                super::alarms::opened_by_this_write(&attrs),
            )),
            Err(e) => {
                tracing::warn!(error = %e, "an alarm image that cannot be read");
                None
            }
        };
    }
    committed_write(item).map(Change::Production)
}

/// The stream read again through DynamoDB Streams.
#[derive(Clone)]
pub struct DynamoStream {
    client: aws_sdk_dynamodbstreams::Client,
}

impl DynamoStream {
    pub fn new(client: aws_sdk_dynamodbstreams::Client) -> Self {
        Self { client }
    }
}

/// `a <= b` for sequence numbers (decimal strings of any length).
fn not_after(a: &str, b: &str) -> bool {
    (a.len(), a) <= (b.len(), b)
}

#[async_trait]
impl StateStream for DynamoStream {
    async fn writes(
        &self,
        stream_arn: &str,
        shard: &str,
        from: &str,
        to: &str,
    ) -> Result<Vec<CommittedWrite>, StoreError> {
        let gone =
            |e: String| StoreError::Unavailable(format!("stream {stream_arn} shard {shard}: {e}"));
        let mut iterator = self
            .client
            .get_shard_iterator()
            .stream_arn(stream_arn)
            .shard_id(shard)
            .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
            .sequence_number(from)
            .send()
            .await
            .map_err(|e| gone(crate::adapters::sdk_error(&e)))?
            .shard_iterator;
        let mut out = Vec::new();
        while let Some(it) = iterator {
            let page = self
                .client
                .get_records()
                .shard_iterator(it)
                .send()
                .await
                .map_err(|e| gone(crate::adapters::sdk_error(&e)))?;
            let records = page.records.unwrap_or_default();
            if records.is_empty() {
                break;
            }
            for r in records {
                let Some(d) = r.dynamodb else { continue };
                let seq = d.sequence_number.unwrap_or_default();
                if !not_after(&seq, to) {
                    return Ok(out);
                }
                if let Some(w) = d.new_image.and_then(committed_write) {
                    out.push(w);
                }
            }
            iterator = page.next_shard_iterator;
        }
        Ok(out)
    }
}
