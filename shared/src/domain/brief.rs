use serde::{Deserialize, Serialize};

/// Voices the sample pipeline's speech provider offers (OpenAI's set).
pub const VOICES: &[&str] = &[
    "alloy", "ash", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer",
];

/// What a team asks for: the input of a production. Unknown fields are refused so a typo
/// (`scene` for `scenes`) is an error rather than a silently ignored setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Brief {
    pub account: String,
    pub title: String,
    pub topic: String,
    #[serde(default = "default_audience")]
    pub audience: String,
    #[serde(default = "default_tone")]
    pub tone: String,
    pub scenes: u32,
    #[serde(default = "default_voice")]
    pub voice: String,
    #[serde(default = "default_language")]
    pub language: String,
    /// Skip approval gates (an errored phase still stops the production).
    #[serde(default)]
    pub auto_approve: bool,
}

fn default_audience() -> String {
    "general".into()
}
fn default_tone() -> String {
    "friendly".into()
}
fn default_voice() -> String {
    "alloy".into()
}
fn default_language() -> String {
    "en".into()
}

/// A brief that cannot start a production; names the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BriefError {
    #[error("brief is not valid JSON for a brief: {0}")]
    Malformed(String),
    #[error("brief.{field}: {problem}")]
    Field {
        field: &'static str,
        problem: String,
    },
    #[error("brief.{0} cannot be edited (editable: title, topic, audience, tone, voice, language)")]
    NotEditable(String),
}

impl Brief {
    pub const MAX_SCENES: u32 = 12;

    /// Parses and validates a brief from JSON text.
    pub fn parse(text: &str) -> Result<Self, BriefError> {
        let brief: Brief =
            serde_json::from_str(text).map_err(|e| BriefError::Malformed(e.to_string()))?;
        brief.validate()?;
        Ok(brief)
    }

    /// Fields an operator may change on a running production (`edit`): not the account,
    /// nor the number of scenes the plan was made for.
    pub const EDITABLE: &'static [&'static str] =
        &["title", "topic", "audience", "tone", "voice", "language"];

    /// A copy with `changes` applied and validated; names a field that cannot be edited.
    pub fn edited(&self, changes: &[super::FieldChange]) -> Result<Brief, BriefError> {
        let mut b = self.clone();
        for super::FieldChange { field, value } in changes {
            let slot = match field.as_str() {
                "title" => &mut b.title,
                "topic" => &mut b.topic,
                "audience" => &mut b.audience,
                "tone" => &mut b.tone,
                "voice" => &mut b.voice,
                "language" => &mut b.language,
                _ => {
                    return Err(BriefError::NotEditable(field.clone()));
                }
            };
            *slot = match value {
                serde_json::Value::String(s) => s.clone(),
                other => {
                    return Err(BriefError::Field {
                        field: "changes",
                        problem: format!("{field} must be text (got {other})"),
                    });
                }
            };
        }
        b.validate()?;
        Ok(b)
    }

    pub fn validate(&self) -> Result<(), BriefError> {
        let field = |field, problem: String| Err(BriefError::Field { field, problem });
        let acct_ok = !self.account.is_empty()
            && self.account.len() <= 64
            && self
                .account
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !acct_ok {
            return field(
                "account",
                format!(
                    "must be 1-64 characters of a-z, 0-9 and '-' (got {:?})",
                    self.account
                ),
            );
        }
        for (name, value, max) in [
            ("title", &self.title, 200),
            ("topic", &self.topic, 2000),
            ("audience", &self.audience, 200),
            ("tone", &self.tone, 100),
        ] {
            if value.trim().is_empty() {
                return field(name, "must not be empty".into());
            }
            if let Some(problem) = super::input::text_problem(value, max) {
                return field(name, problem);
            }
        }
        if self.scenes == 0 || self.scenes > Self::MAX_SCENES {
            return field(
                "scenes",
                format!(
                    "must be between 1 and {} (got {})",
                    Self::MAX_SCENES,
                    self.scenes
                ),
            );
        }
        if !VOICES.contains(&self.voice.as_str()) {
            return field(
                "voice",
                format!(
                    "must be one of {} (got {:?})",
                    VOICES.join(", "),
                    self.voice
                ),
            );
        }
        let lang_ok = (2..=3).contains(&self.language.len())
            && self.language.bytes().all(|b| b.is_ascii_lowercase());
        if !lang_ok {
            return field(
                "language",
                format!(
                    "must be an ISO 639 code such as \"en\" (got {:?})",
                    self.language
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> serde_json::Value {
        serde_json::json!({"account": "acme", "title": "Tides", "topic": "Why tides happen", "scenes": 3})
    }

    #[test]
    fn a_valid_brief_gets_defaults() {
        let b = Brief::parse(&valid().to_string()).unwrap();
        assert_eq!(b.voice, "alloy");
        assert_eq!(b.audience, "general");
    }

    #[test]
    fn each_invalid_field_is_named() {
        let cases = [
            ("scenes", serde_json::json!(0), "brief.scenes"),
            ("scenes", serde_json::json!(40), "brief.scenes"),
            ("title", serde_json::json!("  "), "brief.title"),
            ("voice", serde_json::json!("robot"), "brief.voice"),
            ("account", serde_json::json!("Acme Inc"), "brief.account"),
            ("language", serde_json::json!("english"), "brief.language"),
        ];
        for (key, value, expected) in cases {
            let mut v = valid();
            v[key] = value;
            let err = Brief::parse(&v.to_string()).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{key}: {err}");
        }
    }

    #[test]
    fn missing_and_unknown_fields_are_named() {
        let mut v = valid();
        v.as_object_mut().unwrap().remove("topic");
        let err = Brief::parse(&v.to_string()).unwrap_err().to_string();
        assert!(err.contains("missing field `topic`"), "{err}");
        let mut v = valid();
        v["scene"] = serde_json::json!(2);
        let err = Brief::parse(&v.to_string()).unwrap_err().to_string();
        assert!(err.contains("unknown field `scene`"), "{err}");
    }
}
