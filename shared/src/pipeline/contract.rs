//! Contracts: a pipeline's input and each phase's output checked against their JSON Schemas
//! (the `jsonschema` crate; no remote `$ref` is ever fetched), with the failing field named.

use jsonschema::error::ValidationErrorKind;
use jsonschema::{ValidationError, Validator};
use serde_json::{Map, Value};

use crate::domain::FieldChange;

/// A production's input, as its pipeline's schema accepted it (defaults filled in).
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub account: String,
    /// Skip approval gates (an errored phase still stops the production).
    pub auto_approve: bool,
    pub value: Value,
}

/// An input that cannot start (or edit) a production; names the field and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("input is not a JSON object: {0}")]
    Malformed(String),
    #[error("input{}: {problem}", dotted(.field))]
    Field { field: String, problem: String },
    #[error("input.{field} cannot be edited (editable: {})", editable.join(", "))]
    NotEditable {
        field: String,
        editable: Vec<String>,
    },
}

/// `/scenes/0/n` as `.scenes.0.n` (empty for the whole input).
fn dotted(pointer: &str) -> String {
    pointer
        .split('/')
        .skip(1)
        .fold(String::new(), |mut s, seg| {
            s.push('.');
            s.push_str(&seg.replace("~1", "/").replace("~0", "~"));
            s
        })
}

/// Characters that take no space (see `domain::input`): a text format that refuses a value
/// of only these, for fields that must say something.
pub(crate) const VISIBLE_TEXT: &str = "visible-text";

/// Compiles a schema the way every contract is compiled: formats asserted, the engine's
/// `visible-text` format known, nothing fetched.
pub(crate) fn compile(schema: &Value) -> Result<Validator, String> {
    jsonschema::options()
        .should_validate_formats(true)
        .with_format(VISIBLE_TEXT, |s: &str| {
            crate::domain::input::text_problem(s, usize::MAX).is_none()
        })
        .build(schema)
        .map_err(|e| e.to_string())
}

/// The first violation, as (JSON pointer of the field, problem).
pub(crate) fn first_violation(
    v: &Validator,
    value: &Value,
    masked: bool,
) -> Option<(String, String)> {
    let e: ValidationError<'_> = v.iter_errors(value).next()?;
    let mut field = e.instance_path().as_str().to_string();
    // A missing or unexpected property is the parent's error: name the property itself.
    let problem = match e.kind() {
        ValidationErrorKind::Required { property } => {
            field.push('/');
            field.push_str(property.as_str().unwrap_or_default());
            "is required".to_string()
        }
        ValidationErrorKind::AdditionalProperties { unexpected } if !unexpected.is_empty() => {
            field.push('/');
            field.push_str(&unexpected[0]);
            "is not a field of this schema".to_string()
        }
        _ if masked => e.masked().to_string(),
        _ => e.to_string(),
    };
    // An output's reader is the pipeline's author: say which rule of the contract broke.
    let problem = match masked {
        true => format!("{problem} (schema {})", e.schema_path().as_str()),
        false => problem,
    };
    Some((field, problem))
}

/// Checks `value` against `schema`'s validator; the failing field named.
pub(crate) fn check_input(v: &Validator, value: &Value) -> Result<(), InputError> {
    match first_violation(v, value, false) {
        None => Ok(()),
        Some((field, problem)) => Err(InputError::Field { field, problem }),
    }
}

/// Checks a phase's output; the message names the output's path and the schema's, and
/// never quotes the output (it may be long or private).
pub(crate) fn check_output(v: &Validator, value: &Value) -> Result<(), String> {
    match first_violation(v, value, true) {
        None => Ok(()),
        Some((field, problem)) => Err(format!("output{}: {problem}", dotted(&field))),
    }
}

/// Parses an input's text, fills in top-level defaults, and reads the engine's two fields.
pub(crate) fn parse_input(schema: &Value, v: &Validator, text: &str) -> Result<Input, InputError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| InputError::Malformed(e.to_string()))?;
    let Value::Object(mut obj) = value else {
        return Err(InputError::Malformed(format!(
            "expected an object, got {}",
            kind(&value)
        )));
    };
    fill_defaults(schema, &mut obj);
    let value = Value::Object(obj);
    accept(v, value)
}

/// The engine's view of an input its schema accepts.
fn accept(v: &Validator, value: Value) -> Result<Input, InputError> {
    check_input(v, &value)?;
    // The schema requires an account; its shape is the engine's (it keys tenancy).
    let account = value["account"].as_str().unwrap_or_default().to_string();
    let acct_ok = (1..=64).contains(&account.len())
        && account
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !acct_ok {
        return Err(InputError::Field {
            field: "/account".into(),
            problem: format!("must be 1-64 characters of a-z, 0-9 and '-' (got {account:?})"),
        });
    }
    let auto_approve = value["auto_approve"].as_bool().unwrap_or(false);
    Ok(Input {
        account,
        auto_approve,
        value,
    })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn fill_defaults(schema: &Value, obj: &mut Map<String, Value>) {
    if let Some(props) = schema["properties"].as_object() {
        for (k, s) in props {
            if let Some(d) = s.get("default") {
                obj.entry(k.clone()).or_insert_with(|| d.clone());
            }
        }
    }
}

/// `current` with `changes` applied, checked against the schema again. A field not marked
/// `x-editable` is refused by name; a text given for a non-text field (the command line
/// gives text) is read as JSON.
pub(crate) fn edited(
    schema: &Value,
    v: &Validator,
    editable: &[String],
    current: &Value,
    changes: &[FieldChange],
) -> Result<Input, InputError> {
    let mut obj = current.as_object().cloned().unwrap_or_default();
    for FieldChange { field, value } in changes {
        if !editable.contains(field) {
            return Err(InputError::NotEditable {
                field: field.clone(),
                editable: editable.to_vec(),
            });
        }
        let wants_text = schema["properties"][field]["type"] == "string";
        let value = match value {
            Value::String(s) if !wants_text => {
                serde_json::from_str(s).unwrap_or_else(|_| value.clone())
            }
            _ => value.clone(),
        };
        obj.insert(field.clone(), value);
    }
    accept(v, Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        serde_json::json!({
            "type": "object", "additionalProperties": false,
            "required": ["account", "title", "scenes"],
            "properties": {
                "account": {"type": "string"},
                "title": {"type": "string", "format": "visible-text", "maxLength": 20, "x-editable": true},
                "scenes": {"type": "integer", "minimum": 1, "maximum": 12, "x-editable": true},
                "tone": {"type": "string", "default": "friendly"},
                "auto_approve": {"type": "boolean"}
            }
        })
    }

    fn parse(v: Value) -> Result<Input, InputError> {
        let s = schema();
        parse_input(&s, &compile(&s).unwrap(), &v.to_string())
    }

    #[test]
    fn an_input_gets_its_defaults_and_the_engine_its_fields() {
        let i = parse(serde_json::json!({"account": "acme", "title": "Tides", "scenes": 2, "auto_approve": true})).unwrap();
        assert_eq!(i.value["tone"], "friendly");
        assert_eq!((i.account.as_str(), i.auto_approve), ("acme", true));
    }

    #[test]
    fn each_violation_names_the_field() {
        let base = serde_json::json!({"account": "acme", "title": "Tides", "scenes": 2});
        let cases = [
            (
                "scenes",
                serde_json::json!(40),
                "input.scenes: 40 is greater than the maximum of 12",
            ),
            (
                "scenes",
                serde_json::json!("two"),
                "input.scenes: \"two\" is not of type \"integer\"",
            ),
            ("title", serde_json::json!("\u{200B} "), "input.title"),
            (
                "account",
                serde_json::json!("Acme Inc"),
                "input.account: must be 1-64",
            ),
            (
                "scene",
                serde_json::json!(2),
                "input.scene: is not a field of this schema",
            ),
        ];
        for (key, value, expected) in cases {
            let mut v = base.clone();
            v[key] = value;
            let err = parse(v).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{key}: {err}");
        }
        let mut v = base.clone();
        v.as_object_mut().unwrap().remove("title");
        assert_eq!(
            parse(v).unwrap_err().to_string(),
            "input.title: is required"
        );
        assert!(matches!(
            parse(serde_json::json!([1])),
            Err(InputError::Malformed(_))
        ));
    }

    #[test]
    fn only_editable_fields_change_and_the_result_is_checked() {
        let s = schema();
        let v = compile(&s).unwrap();
        let editable = vec!["scenes".to_string(), "title".to_string()];
        let current = serde_json::json!({"account": "acme", "title": "Tides", "scenes": 2});
        let change = |field: &str, value: &str| FieldChange {
            field: field.into(),
            value: Value::String(value.into()),
        };
        let e = edited(&s, &v, &editable, &current, &[change("scenes", "3")]).unwrap();
        assert_eq!(e.value["scenes"], 3, "text read as JSON for a number");
        let err = edited(&s, &v, &editable, &current, &[change("account", "x")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "input.account cannot be edited (editable: scenes, title)"
        );
        let err = edited(&s, &v, &editable, &current, &[change("scenes", "99")]).unwrap_err();
        assert!(err.to_string().starts_with("input.scenes:"), "{err}");
    }

    #[test]
    fn an_output_violation_names_both_paths_and_not_the_value() {
        let v = compile(&serde_json::json!({
            "type": "object", "required": ["scenes"],
            "properties": {"scenes": {"type": "array", "items": {"type": "object",
                "required": ["n"], "properties": {"n": {"type": "integer"}}}}}
        }))
        .unwrap();
        let err =
            check_output(&v, &serde_json::json!({"scenes": [{"n": "secret text"}]})).unwrap_err();
        assert!(err.starts_with("output.scenes.0.n: "), "{err}");
        assert!(
            err.contains("schema /properties/scenes/items/properties/n/type"),
            "{err}"
        );
        assert!(!err.contains("secret"), "{err}");
        assert!(check_output(&v, &serde_json::json!({"scenes": []})).is_ok());
    }
}
