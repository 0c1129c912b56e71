use serde::{Deserialize, Serialize};

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
