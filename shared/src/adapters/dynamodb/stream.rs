//! The state table's stream, as the audit projector reads it: each new image of a
//! production item that carried audit events is one committed write.

use crate::ports::CommittedWrite;

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
