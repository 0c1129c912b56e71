//! How an arriving item becomes a pipeline's input (F-01): each source kind declares the
//! schema of its items per event type; an item is checked against it, filtered by the
//! source's `when` (JSON pointer -> value), and mapped to the pipeline's input by the
//! source's `mapping` (input field -> a JSON pointer into the item, or `{"value": ...}`).
//! The mapped input is then checked against the pipeline's own schema by the start.
//! Pure.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use jsonschema::Validator;
use serde_json::Value;

pub use crate::domain::events::SourceKind;

/// What Shepherd knows of a source kind's items.
pub trait ItemSchemas {
    /// Checks an item of `event_type`: the first problem, naming the field
    /// (`issue.number: "x" is not of type "integer"`).
    fn check(self, event_type: &str, item: &Value) -> Result<(), String>;
    /// Whether its sources may take `event_type` at all.
    fn takes(self, event_type: &str) -> bool;
}

/// The schema of a kind's items of `event_type`; `None`: an event type it does not take.
fn schema(kind: SourceKind, event_type: &str) -> Option<Value> {
    let s = match (kind, event_type) {
        // The fields of GitHub's `issues` event that a mapping may read (GitHub's
        // webhook payload reference; unlisted fields are allowed and ignored).
        (SourceKind::Github, "issues") => serde_json::json!({
            "type": "object",
            "required": ["action", "issue", "repository"],
            "properties": {
                "action": {"type": "string"},
                "issue": {"type": "object",
                    "required": ["number", "title", "labels", "updated_at"],
                    "properties": {
                        "number": {"type": "integer", "minimum": 1},
                        "title": {"type": "string"},
                        "body": {"type": ["string", "null"]},
                        "labels": {"type": "array", "items": {"type": "object",
                            "required": ["name"], "properties": {"name": {"type": "string"}}}},
                        "updated_at": {"type": "string"},
                        "html_url": {"type": "string"}}},
                "label": {"type": "object", "properties": {"name": {"type": "string"}}},
                "repository": {"type": "object", "required": ["full_name"],
                    "properties": {"full_name": {"type": "string"}}}}
        }),
        (SourceKind::Github, "ping") => serde_json::json!({"type": "object",
                "required": ["zen"], "properties": {"zen": {"type": "string"}}}),
        (SourceKind::Standard, _) => serde_json::json!({
            "type": "object",
            "required": ["type", "timestamp", "data"],
            "properties": {
                "type": {"type": "string", "minLength": 1},
                "timestamp": {"type": "string"},
                "data": {"type": "object"}}
        }),
        (SourceKind::Feed, "entry") => serde_json::json!({
            "type": "object",
            "required": ["id", "title"],
            "properties": {
                "id": {"type": "string", "minLength": 1},
                "title": {"type": "string", "minLength": 1},
                "link": {"type": "string"},
                "summary": {"type": "string"},
                "updated": {"type": "string"}}
        }),
        (SourceKind::GithubIssues, "issue") => serde_json::json!({
            "type": "object",
            "required": ["number", "title", "updated_at", "repository"],
            "properties": {
                "number": {"type": "integer", "minimum": 1},
                "title": {"type": "string"},
                "body": {"type": ["string", "null"]},
                "updated_at": {"type": "string"},
                "html_url": {"type": "string"},
                "repository": {"type": "string"}}
        }),
        _ => return None,
    };
    Some(s)
}

impl ItemSchemas for SourceKind {
    fn check(self, event_type: &str, item: &Value) -> Result<(), String> {
        check_item(
            &format!("{}#{event_type}", self.as_str()),
            || schema(self, event_type),
            item,
        )
        .ok_or_else(|| {
            format!(
                "{} sources do not take {event_type:?} events",
                self.as_str()
            )
        })?
    }

    fn takes(self, event_type: &str) -> bool {
        schema(self, event_type).is_some()
    }
}

/// Checks `item` against the schema `schema` gives (compiled once per `key`, a kind and
/// an event type): the first problem, naming the field. `None`: `schema` gave none.
pub(crate) fn check_item(
    key: &str,
    schema: impl FnOnce() -> Option<Value>,
    item: &Value,
) -> Option<Result<(), String>> {
    static CACHE: OnceLock<std::sync::Mutex<BTreeMap<String, std::sync::Arc<Validator>>>> =
        OnceLock::new();
    let validator = {
        let mut cache = CACHE.get_or_init(Default::default).lock().expect("cache");
        match cache.get(key) {
            Some(v) => v.clone(),
            None => {
                let v = std::sync::Arc::new(
                    super::contract::compile(&schema()?).expect("item schemas compile"),
                );
                cache.insert(key.to_string(), v.clone());
                v
            }
        }
    };
    Some(violation(&validator, item))
}

/// The first problem `validator` finds in `value`, naming its field (`a.b: problem`).
pub(crate) fn violation(validator: &Validator, value: &Value) -> Result<(), String> {
    match super::contract::first_violation(validator, value, false) {
        None => Ok(()),
        Some((field, problem)) => Err(format!(
            "{}: {problem}",
            field.trim_start_matches('/').replace('/', ".")
        )
        .trim_start_matches(": ")
        .to_string()),
    }
}

/// Input field -> a JSON pointer into the item (`"/issue/title"`) or `{"value": <literal>}`.
pub type Mapping = BTreeMap<String, Value>;
/// JSON pointer into the item -> the value it must equal for the item to start work.
pub type When = BTreeMap<String, Value>;

/// Checks a mapping and a filter as written.
pub fn check_mapping(mapping: &Mapping, when: &When) -> Result<(), String> {
    if mapping.is_empty() {
        return Err("mapping is empty: map at least one input field".into());
    }
    for (field, m) in mapping {
        match m {
            Value::String(p) if p.starts_with('/') => {}
            Value::Object(o) if o.len() == 1 && o.contains_key("value") => {}
            other => {
                return Err(format!(
                    "mapping.{field}: {other} is neither a JSON pointer (\"/issue/title\") nor {{\"value\": ...}}"
                ));
            }
        }
        if field == "account" {
            return Err("mapping.account: the account is the source's own".into());
        }
    }
    if let Some(p) = when.keys().find(|p| !p.starts_with('/')) {
        return Err(format!("when: {p:?} is not a JSON pointer (\"/action\")"));
    }
    Ok(())
}

/// Whether the item passes the source's filter.
pub fn matches(when: &When, item: &Value) -> bool {
    when.iter().all(|(p, v)| item.pointer(p) == Some(v))
}

/// The pipeline input `mapping` makes of `item`, with `account`: a pointer that finds
/// nothing (or null) is an error naming it.
pub fn map(mapping: &Mapping, item: &Value, account: &str) -> Result<Value, String> {
    let mut input = serde_json::Map::new();
    for (field, m) in mapping {
        let v = match m {
            Value::String(p) => match item.pointer(p) {
                Some(Value::Null) | None => {
                    return Err(format!("mapping.{field}: the item has nothing at {p}"));
                }
                Some(v) => v.clone(),
            },
            Value::Object(o) => o["value"].clone(),
            _ => unreachable!("checked by check_mapping"),
        };
        input.insert(field.clone(), v);
    }
    input.insert("account".into(), account.into());
    Ok(Value::Object(input))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn issue() -> Value {
        json!({"action": "labeled", "label": {"name": "shepherd"},
            "issue": {"number": 7, "title": "Fix the tide table", "body": "It is off by one",
                "labels": [{"name": "shepherd"}], "updated_at": "2026-12-07T10:00:00Z"},
            "repository": {"full_name": "acme/widgets"}})
    }

    #[test]
    fn an_item_that_breaks_its_schema_is_refused_naming_the_field() {
        assert_eq!(SourceKind::Github.check("issues", &issue()), Ok(()));
        let mut bad = issue();
        bad["issue"]["number"] = json!("seven");
        let e = SourceKind::Github.check("issues", &bad).unwrap_err();
        assert!(e.starts_with("issue.number: "), "{e}");
        let mut bad = issue();
        bad["repository"]
            .as_object_mut()
            .unwrap()
            .remove("full_name");
        let e = SourceKind::Github.check("issues", &bad).unwrap_err();
        assert_eq!(e, "repository.full_name: is required");
        assert!(
            SourceKind::Github
                .check("push", &issue())
                .unwrap_err()
                .contains("\"push\"")
        );
        assert!(!SourceKind::Feed.takes("issues"));
    }

    #[test]
    fn a_mapping_reads_pointers_and_literals_and_names_what_is_missing() {
        let mapping: Mapping = serde_json::from_value(json!({
            "repository": "/repository/full_name", "task": "/issue/body",
            "title": "/issue/title", "priority": {"value": 2}}))
        .unwrap();
        let when: When = serde_json::from_value(json!({"/label/name": "shepherd"})).unwrap();
        check_mapping(&mapping, &when).unwrap();
        assert!(matches(&when, &issue()));
        let input = map(&mapping, &issue(), "acme").unwrap();
        assert_eq!(
            input,
            json!({"account": "acme", "repository": "acme/widgets", "task": "It is off by one",
                "title": "Fix the tide table", "priority": 2})
        );
        let mut no_body = issue();
        no_body["issue"]["body"] = Value::Null;
        assert_eq!(
            map(&mapping, &no_body, "acme").unwrap_err(),
            "mapping.task: the item has nothing at /issue/body"
        );
        let bad: Mapping = serde_json::from_value(json!({"task": "issue.body"})).unwrap();
        assert!(
            check_mapping(&bad, &When::new())
                .unwrap_err()
                .starts_with("mapping.task")
        );
        let mut other = issue();
        other["label"]["name"] = json!("bug");
        assert!(!matches(&when, &other));
    }
}
