//! What travels on the queues: the phase message's body, the message attributes Shepherd
//! adds, and the queue messages as the `Queue` port sends and reads them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::Millis;

/// Message attributes Shepherd sets.
pub mod attr {
    /// On a quarantined message: why no retry can help (`malformed_message: ...`).
    pub const ERROR: &str = "shepherd_error";
    /// On a quarantined message: the id it had in the phase queue.
    pub const SOURCE_MESSAGE_ID: &str = "shepherd_source_message_id";
    /// On a redriven message: its id in the DLQ.
    pub const REDRIVEN_FROM: &str = "shepherd_redriven_from";
    /// On a redriven message: who moved it.
    pub const REDRIVEN_BY: &str = "shepherd_redriven_by";
}

/// One message to send; `id` is unique within a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutMessage {
    pub id: String,
    pub body: String,
    pub attributes: Vec<(String, String)>,
    /// Seconds before the message may be received (at most 900).
    pub delay: Option<u32>,
}

/// A message read from a queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InMessage {
    pub id: String,
    pub body: String,
    pub receipt: String,
    /// When it was first sent (SentTimestamp).
    pub sent_at: Option<Millis>,
    /// Its message attributes' string values (`shepherd_error`, lineage, ...).
    pub attributes: BTreeMap<String, String>,
}

/// The body of a phase message: which production, which phase, which attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseMessage {
    pub production_id: String,
    pub phase: String,
    pub attempt: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("body is not a phase message: {0}")]
    Malformed(String),
    #[error("message for phase {got} reached the {expected} queue")]
    WrongPhase { got: String, expected: String },
    #[error("attempt must be at least 1")]
    ZeroAttempt,
}

impl PhaseMessage {
    pub fn new(production_id: &str, phase: &str, attempt: u32) -> Self {
        Self {
            production_id: production_id.into(),
            phase: phase.into(),
            attempt,
        }
    }

    pub fn to_body(&self) -> String {
        serde_json::to_string(self).expect("message serialises")
    }

    /// The message to send for it (`id` unique within its batch).
    pub fn out(&self, id: impl Into<String>) -> OutMessage {
        OutMessage {
            id: id.into(),
            body: self.to_body(),
            attributes: vec![],
            delay: None,
        }
    }

    /// Parses a body meant for `expected`'s queue.
    pub fn parse(body: &str, expected: &str) -> Result<Self, MessageError> {
        let m: Self =
            serde_json::from_str(body).map_err(|e| MessageError::Malformed(e.to_string()))?;
        if m.phase != expected {
            return Err(MessageError::WrongPhase {
                got: m.phase,
                expected: expected.into(),
            });
        }
        if m.attempt == 0 {
            return Err(MessageError::ZeroAttempt);
        }
        Ok(m)
    }

    /// The production a body names, if it is a phase message at all.
    pub fn production_of(body: &str) -> Option<String> {
        serde_json::from_str::<Self>(body)
            .ok()
            .map(|m| m.production_id)
    }
}

/// A message no retry can fix, as it goes to the phase's DLQ: its body as it came, the
/// reason and where it came from.
pub fn quarantined(body: &str, reason: &str, source_message_id: &str) -> OutMessage {
    OutMessage {
        id: "q".into(),
        body: body.into(),
        attributes: vec![
            (attr::ERROR.into(), format!("malformed_message: {reason}")),
            (attr::SOURCE_MESSAGE_ID.into(), source_message_id.into()),
        ],
        delay: None,
    }
}

/// A message sent as it came (a hold's re-send, a dead letter's move), after `delay`.
pub fn again(body: &str, delay: Option<u32>) -> OutMessage {
    OutMessage {
        id: "again".into(),
        body: body.into(),
        attributes: vec![],
        delay,
    }
}

/// A DLQ message sent back to its phase queue, with its lineage.
pub fn redriven(m: &InMessage, by: &str) -> OutMessage {
    OutMessage {
        id: "redrive".into(),
        body: m.body.clone(),
        attributes: vec![
            (attr::REDRIVEN_FROM.into(), m.id.clone()),
            (attr::REDRIVEN_BY.into(), by.into()),
        ],
        delay: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_it_cannot_run() {
        let m = PhaseMessage::new("p1", "script", 2);
        assert_eq!(PhaseMessage::parse(&m.to_body(), "script").unwrap(), m);
        assert!(matches!(
            PhaseMessage::parse("{not json", "script"),
            Err(MessageError::Malformed(_))
        ));
        assert!(matches!(
            PhaseMessage::parse(&m.to_body(), "voice"),
            Err(MessageError::WrongPhase { .. })
        ));
        let zero = r#"{"production_id":"p","phase":"script","attempt":0}"#;
        assert_eq!(
            PhaseMessage::parse(zero, "script"),
            Err(MessageError::ZeroAttempt)
        );
    }
}
