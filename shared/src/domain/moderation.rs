//! Safety flags from a moderation API's scores (OpenAI's `/moderations`, `omni-moderation`
//! models): a category whose score reaches its threshold becomes a warning flag, which the
//! rights-review gate (`acknowledge_warnings`) already holds publish for.
//!
//! Thresholds are configuration, written `*=0.5,sexual=0.3,violence/graphic=0.4`: `*` for
//! every category not named, each in [0, 1]. The provider's own `flagged` is not used: its
//! thresholds are its own and not published, and a team's tolerance is a team's choice.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The categories OpenAI's moderation models score (the API reference's `category_scores`).
pub const CATEGORIES: &[&str] = &[
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

/// One input's moderation, as recorded: every category's score, and the input types each
/// score applies to (an image-only input leaves text-only categories with none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Moderation {
    /// The model that answered (`omni-moderation-2024-09-26`).
    pub model: String,
    pub scores: BTreeMap<String, f64>,
    #[serde(default)]
    pub applied: BTreeMap<String, Vec<String>>,
}

/// Per-category thresholds (a flag at or above).
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    default: f64,
    categories: BTreeMap<String, f64>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            default: 0.5,
            categories: BTreeMap::new(),
        }
    }
}

impl std::str::FromStr for Thresholds {
    type Err = String;

    /// `*=0.5,sexual=0.3`; a category the models do not score, a value outside [0, 1] or
    /// a malformed pair is refused, naming it.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut t = Self::default();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?}: expected CATEGORY=SCORE (or *=SCORE)"))?;
            let (name, value) = (name.trim(), value.trim());
            let score: f64 = value
                .parse()
                .ok()
                .filter(|s| (0.0..=1.0).contains(s))
                .ok_or_else(|| format!("{name}={value}: the score must be a number in [0, 1]"))?;
            if name == "*" {
                t.default = score;
            } else if CATEGORIES.contains(&name) {
                t.categories.insert(name.to_string(), score);
            } else {
                return Err(format!(
                    "{name:?} is not a moderation category (one of {})",
                    CATEGORIES.join(", ")
                ));
            }
        }
        Ok(t)
    }
}

impl Thresholds {
    pub fn of(&self, category: &str) -> f64 {
        self.categories
            .get(category)
            .copied()
            .unwrap_or(self.default)
    }

    /// The flags a moderation raises, highest score first: `violence 0.91`.
    pub fn flags(&self, m: &Moderation) -> Vec<String> {
        let mut over: Vec<(&String, f64)> = m
            .scores
            .iter()
            .filter(|(c, s)| **s >= self.of(c))
            .map(|(c, s)| (c, *s))
            .collect();
        over.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        over.into_iter()
            .map(|(c, s)| format!("{c} {s:.2}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moderation(scores: &[(&str, f64)]) -> Moderation {
        Moderation {
            model: "omni-moderation-2024-09-26".into(),
            scores: scores.iter().map(|(c, s)| (c.to_string(), *s)).collect(),
            applied: BTreeMap::new(),
        }
    }

    #[test]
    fn a_score_at_or_above_its_categorys_threshold_is_a_flag_highest_first() {
        let t: Thresholds = "*=0.5, sexual=0.2".parse().unwrap();
        let m = moderation(&[
            ("violence", 0.5),
            ("sexual", 0.25),
            ("hate", 0.49),
            ("violence/graphic", 0.93),
        ]);
        assert_eq!(
            t.flags(&m),
            ["violence/graphic 0.93", "violence 0.50", "sexual 0.25"]
        );
        assert!(
            Thresholds::default()
                .flags(&moderation(&[("sexual", 0.25)]))
                .is_empty()
        );
    }

    #[test]
    fn thresholds_that_are_not_scores_of_known_categories_are_refused_naming_them() {
        let err = "violense=0.4".parse::<Thresholds>().unwrap_err();
        assert!(
            err.contains("\"violense\" is not a moderation category"),
            "{err}"
        );
        let err = "*=1.5".parse::<Thresholds>().unwrap_err();
        assert!(
            err.contains("*=1.5: the score must be a number in [0, 1]"),
            "{err}"
        );
        let err = "sexual".parse::<Thresholds>().unwrap_err();
        assert!(err.contains("expected CATEGORY=SCORE"), "{err}");
        assert_eq!("".parse::<Thresholds>().unwrap(), Thresholds::default());
    }
}
