//! Reads `template.yaml` and resolves the intrinsic functions the local stack needs
//! (`Ref`, `Fn::GetAtt`, `Fn::Sub`, `Fn::Join`, and `Fn::If` over the template's
//! `Conditions` with `AWS::NoValue`), in short (`!Ref`) or long form.

use std::collections::HashMap;

use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template.yaml: {0}")]
    Parse(String),
    #[error("unresolved reference to {0}")]
    Unresolved(String),
    #[error("unsupported in the local stack: {0}")]
    Unsupported(String),
}

/// A template as JSON, with short-form tags rewritten to the long form.
pub fn load(text: &str) -> Result<Value, TemplateError> {
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| TemplateError::Parse(e.to_string()))?;
    Ok(to_json(yaml))
}

fn to_json(v: serde_yaml::Value) -> Value {
    use serde_yaml::Value as Y;
    match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => serde_json::to_value(n).unwrap_or(Value::Null),
        Y::String(s) => Value::String(s),
        Y::Sequence(s) => Value::Array(s.into_iter().map(to_json).collect()),
        Y::Mapping(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    (
                        k.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| format!("{k:?}")),
                        to_json(v),
                    )
                })
                .collect(),
        ),
        Y::Tagged(t) => {
            let tag = t.tag.to_string();
            let tag = tag.trim_start_matches('!');
            let inner = to_json(t.value);
            let (name, inner) = match tag {
                "Ref" => ("Ref".to_string(), inner),
                "GetAtt" => {
                    let parts = match inner {
                        Value::String(s) => {
                            let (a, b) = s.split_once('.').unwrap_or((&s, ""));
                            Value::Array(vec![a.into(), b.into()])
                        }
                        other => other,
                    };
                    ("Fn::GetAtt".to_string(), parts)
                }
                other => (format!("Fn::{other}"), inner),
            };
            Value::Object(Map::from_iter([(name, inner)]))
        }
    }
}

/// What references resolve to.
#[derive(Debug, Default, Clone)]
pub struct Context {
    /// Parameters and pseudo parameters (`AWS::StackName`, ...).
    pub refs: HashMap<String, String>,
    /// `Logical.Attribute` -> value.
    pub attrs: HashMap<String, String>,
    /// The template's `Conditions`, by name (evaluated when an `Fn::If` asks).
    pub conditions: Map<String, Value>,
}

/// What `Ref: AWS::NoValue` resolves to until its key or item is dropped.
const NO_VALUE: &str = "\u{0}AWS::NoValue";

fn is_no_value(v: &Value) -> bool {
    v.as_str() == Some(NO_VALUE)
}

impl Context {
    pub fn resolve(&self, v: &Value) -> Result<Value, TemplateError> {
        match v {
            Value::Object(m) if m.len() == 1 => {
                let (k, arg) = m.iter().next().expect("one entry");
                match k.as_str() {
                    "Ref" if arg == "AWS::NoValue" => Ok(Value::String(NO_VALUE.into())),
                    "Fn::If" => {
                        let a = arg.as_array().filter(|a| a.len() == 3).ok_or_else(|| {
                            TemplateError::Parse(format!(
                                "Fn::If takes [condition, then, else]: {arg}"
                            ))
                        })?;
                        let name = a[0].as_str().unwrap_or_default();
                        let branch = if self.condition(name)? { &a[1] } else { &a[2] };
                        self.resolve(branch)
                    }
                    "Ref" => {
                        let name = arg.as_str().unwrap_or_default();
                        self.refs
                            .get(name)
                            .map(|s| Value::String(s.clone()))
                            .ok_or_else(|| TemplateError::Unresolved(name.into()))
                    }
                    "Fn::GetAtt" => {
                        let parts: Vec<&str> = arg
                            .as_array()
                            .map(|a| a.iter().filter_map(Value::as_str).collect())
                            .unwrap_or_default();
                        let key = parts.join(".");
                        self.attrs
                            .get(&key)
                            .map(|s| Value::String(s.clone()))
                            .ok_or(TemplateError::Unresolved(key))
                    }
                    "Fn::Sub" => {
                        let (text, vars) = match arg {
                            Value::String(s) => (s.as_str(), Map::new()),
                            Value::Array(a) if a.len() == 2 => (
                                a[0].as_str().unwrap_or_default(),
                                a[1].as_object().cloned().unwrap_or_default(),
                            ),
                            other => {
                                return Err(TemplateError::Unsupported(format!("Fn::Sub {other}")));
                            }
                        };
                        let mut local = HashMap::new();
                        for (k, v) in vars {
                            local.insert(
                                k,
                                self.resolve(&v)?.as_str().unwrap_or_default().to_string(),
                            );
                        }
                        Ok(Value::String(self.sub(text, &local)?))
                    }
                    "Fn::Join" => {
                        let a = arg
                            .as_array()
                            .ok_or_else(|| TemplateError::Unsupported("Fn::Join".into()))?;
                        let sep = a.first().and_then(Value::as_str).unwrap_or_default();
                        let items = self.resolve(a.get(1).unwrap_or(&Value::Null))?;
                        let parts: Vec<String> =
                            items.as_array().into_iter().flatten().map(scalar).collect();
                        Ok(Value::String(parts.join(sep)))
                    }
                    k if k.starts_with("Fn::") => Err(TemplateError::Unsupported(k.into())),
                    _ => Ok(Value::Object(Map::from_iter([(
                        k.clone(),
                        self.resolve(arg)?,
                    )]))),
                }
            }
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, v) in m {
                    let v = self.resolve(v)?;
                    if !is_no_value(&v) {
                        out.insert(k.clone(), v);
                    }
                }
                Ok(Value::Object(out))
            }
            Value::Array(a) => {
                let mut out = Vec::new();
                for v in a {
                    let v = self.resolve(v)?;
                    if !is_no_value(&v) {
                        out.push(v);
                    }
                }
                Ok(Value::Array(out))
            }
            other => Ok(other.clone()),
        }
    }

    /// Whether the template's condition `name` holds.
    pub fn condition(&self, name: &str) -> Result<bool, TemplateError> {
        let expr = self
            .conditions
            .get(name)
            .ok_or_else(|| TemplateError::Unresolved(format!("condition {name}")))?;
        self.truth(expr)
    }

    fn truth(&self, expr: &Value) -> Result<bool, TemplateError> {
        let bad = || TemplateError::Unsupported(format!("condition {expr}"));
        let (k, arg) = expr
            .as_object()
            .filter(|m| m.len() == 1)
            .and_then(|m| m.iter().next())
            .ok_or_else(bad)?;
        let args = || arg.as_array().cloned().unwrap_or_default();
        match k.as_str() {
            "Condition" => self.condition(arg.as_str().unwrap_or_default()),
            "Fn::Not" => Ok(!self.truth(args().first().ok_or_else(bad)?)?),
            "Fn::And" => args()
                .iter()
                .try_fold(true, |acc, c| Ok(acc && self.truth(c)?)),
            "Fn::Or" => args()
                .iter()
                .try_fold(false, |acc, c| Ok(acc || self.truth(c)?)),
            "Fn::Equals" => {
                let a = args();
                if a.len() != 2 {
                    return Err(bad());
                }
                Ok(scalar(&self.resolve(&a[0])?) == scalar(&self.resolve(&a[1])?))
            }
            _ => Err(bad()),
        }
    }

    fn sub(&self, text: &str, local: &HashMap<String, String>) -> Result<String, TemplateError> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| TemplateError::Parse(format!("unclosed ${{ in {text:?}")))?;
            let name = &after[..end];
            let value = if let Some(v) = local.get(name) {
                v.clone()
            } else if let Some(v) = self.refs.get(name) {
                v.clone()
            } else if let Some(v) = self.attrs.get(name) {
                v.clone()
            } else {
                return Err(TemplateError::Unresolved(name.into()));
            };
            out.push_str(&value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// A scalar as the string CloudFormation would pass (numbers and booleans included).
pub fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Lambda's limit on a function's environment: the bytes of every key and value, in all.
pub const LAMBDA_ENVIRONMENT_LIMIT: usize = 4096;

/// Each function's environment size in bytes as Lambda would count it in AWS, for a stack
/// named with `stack_len` characters in region `ap-southeast-2`: a queue's `Ref` is
/// `https://sqs.<region>.amazonaws.com/<account>/<stack>-<name>`, its `QueueName` the last
/// part, any other reference or parameter 64 characters (more than a table's or a
/// parameter's name usually is). The emulator's URLs are shorter than AWS's, so a local run
/// alone would not see a template outgrow the limit.
pub fn environment_sizes(template: &Value, stack_len: usize) -> Vec<(String, usize)> {
    let stack = "s".repeat(stack_len);
    let resources = template["Resources"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let queue_name = |id: &str| -> Option<String> {
        let r = resources.get(id)?;
        (r["Type"] == "AWS::SQS::Queue").then(|| {
            let name = r["Properties"]["QueueName"]["Fn::Sub"]
                .as_str()
                .unwrap_or(id);
            name.replace("${AWS::StackName}", &stack)
        })
    };
    let value_len = |v: &Value| -> usize {
        if let Some(text) = v["Fn::Sub"].as_str() {
            let mut len = 0;
            let mut rest = text;
            while let Some(start) = rest.find("${") {
                len += start;
                let after = &rest[start + 2..];
                let end = after.find('}').unwrap_or(after.len());
                let name = &after[..end];
                len += match name.split_once('.') {
                    Some((id, "QueueName")) => queue_name(id).map_or(64, |n| n.len()),
                    None => queue_name(name).map_or(64, |n| {
                        "https://sqs.ap-southeast-2.amazonaws.com/123456789012/".len() + n.len()
                    }),
                    _ => 64,
                };
                rest = after.get(end + 1..).unwrap_or_default();
            }
            len + rest.len()
        } else if v.is_string() || v.is_number() {
            scalar(v).len()
        } else {
            64
        }
    };
    let size = |vars: &Value| -> usize {
        vars.as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| k.len() + value_len(v))
            .sum()
    };
    let globals = &template["Globals"]["Function"]["Environment"]["Variables"];
    resources
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Serverless::Function")
        .map(|(id, r)| {
            let own = &r["Properties"]["Environment"]["Variables"];
            let mut merged = globals.as_object().cloned().unwrap_or_default();
            merged.extend(own.as_object().cloned().unwrap_or_default());
            (id.clone(), size(&Value::Object(merged)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_short_and_long_forms() {
        let t = load(
            "a: !Ref P\nb: !GetAtt Q.Arn\nc: !Sub \"${AWS::StackName}-x-${Q.Arn}\"\nd: {Ref: P}\ne: !Sub [\"${V}!\", {V: !Ref P}]\n",
        )
        .unwrap();
        let mut cx = Context::default();
        cx.refs.insert("P".into(), "p".into());
        cx.refs.insert("AWS::StackName".into(), "s".into());
        cx.attrs.insert("Q.Arn".into(), "arn:q".into());
        let r = cx.resolve(&t).unwrap();
        assert_eq!(r["a"], "p");
        assert_eq!(r["b"], "arn:q");
        assert_eq!(r["c"], "s-x-arn:q");
        assert_eq!(r["d"], "p");
        assert_eq!(r["e"], "p!");
    }

    #[test]
    fn names_what_it_cannot_resolve() {
        let t = load("a: !Ref Missing\n").unwrap();
        let err = Context::default().resolve(&t).unwrap_err();
        assert_eq!(err.to_string(), "unresolved reference to Missing");
    }
}
