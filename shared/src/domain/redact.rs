//! Redaction before anything is stored: error details, audit details, feedback.
//!
//! Two rules. Values of keys that name secrets (`password`, `token`, `api_key`,
//! `authorization`, `secret`, ...) are replaced, whatever they look like. Values that look
//! like known secret formats (AWS access keys, bearer tokens, provider API keys, private
//! key blocks, JWTs, GitHub and Slack tokens) are replaced wherever they appear, and are
//! reported, because such a value reaching a store means something leaked it: the caller
//! raises a critical `secret_leak_detected` alarm.

use std::sync::LazyLock;

use regex::Regex;

/// Known secret formats, by name.
static PATTERNS: LazyLock<Vec<(&'static str, Regex)>> = LazyLock::new(|| {
    [
        (
            "private_key",
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
        ),
        ("aws_access_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
        (
            "jwt",
            r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}",
        ),
        ("bearer_token", r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]{8,}=*"),
        (
            "provider_api_key",
            r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}",
        ),
        ("github_token", r"\bgh[pousr]_[A-Za-z0-9]{30,}"),
        ("slack_token", r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    ]
    .into_iter()
    .map(|(name, re)| (name, Regex::new(re).expect("pattern compiles")))
    .collect()
});

/// `key: value`, `key=value`, `"key": "value"` where the key names a secret.
static SECRET_KEYS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)("?(?:password|passwd|pwd|token|access_token|refresh_token|api[_-]?key|x-api-key|authorization|secret|client_secret|secret_key|access[_-]?key|private[_-]?key)"?\s*[:=]\s*)("[^"]*"|'[^']*'|[^\s,;}&]+)"#,
    )
    .expect("pattern compiles")
});

pub const REDACTED: &str = "[REDACTED]";

/// Text with secrets replaced, and the names of the known formats that were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redacted {
    pub text: String,
    /// Known secret formats found (each a leak worth an alarm).
    pub leaks: Vec<&'static str>,
}

pub fn redact(text: &str) -> Redacted {
    let mut out = text.to_string();
    let mut leaks = Vec::new();
    for (name, re) in PATTERNS.iter() {
        if re.is_match(&out) {
            leaks.push(*name);
            out = re
                .replace_all(&out, format!("[REDACTED:{name}]"))
                .into_owned();
        }
    }
    let out = SECRET_KEYS
        .replace_all(&out, |c: &regex::Captures<'_>| {
            let value = &c[2];
            if value.starts_with("[REDACTED") || value.starts_with("\"[REDACTED") {
                format!("{}{value}", &c[1])
            } else {
                format!("{}{REDACTED}", &c[1])
            }
        })
        .into_owned();
    Redacted { text: out, leaks }
}

/// Redacts every free text a transition stores (error details, feedback, audit details,
/// warnings); returns where a known secret format was found.
pub fn scrub(t: &mut super::Transition) -> Vec<String> {
    let mut leaks = Vec::new();
    let mut scrub = |text: &mut String, place: String| {
        let r = redact(text);
        for kind in &r.leaks {
            leaks.push(format!("{kind} in {place}"));
        }
        *text = r.text;
    };
    for ph in t.production.phases.iter_mut() {
        if let Some(e) = ph.last_error.as_mut() {
            scrub(&mut e.detail, format!("phase {} error detail", ph.name));
        }
        if let Some(f) = ph.feedback.as_mut() {
            scrub(f, format!("phase {} feedback", ph.name));
        }
    }
    for e in t.audit.iter_mut() {
        scrub(&mut e.detail, format!("audit {} detail", e.kind));
    }
    for w in t.production.warnings.iter_mut() {
        scrub(w, "a warning".into());
    }
    leaks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_formats_are_replaced_and_reported() {
        let cases = [
            ("key AKIAIOSFODNN7EXAMPLE used", "aws_access_key"),
            ("Authorization: Bearer abc.def-ghi_jkl123", "bearer_token"),
            (
                "invalid key sk-proj-AbCdEfGhIjKlMnOpQrStUvWx123",
                "provider_api_key",
            ),
            (
                "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
                "jwt",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
                "private_key",
            ),
            (
                "token ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
                "github_token",
            ),
        ];
        for (text, kind) in cases {
            let r = redact(text);
            assert!(r.leaks.contains(&kind), "{text}: {r:?}");
            assert!(r.text.contains("[REDACTED"), "{text}: {r:?}");
        }
    }

    #[test]
    fn values_of_secret_keys_are_replaced_without_an_alarm() {
        for text in [
            r#"{"password": "hunter2", "user": "bob"}"#,
            "api_key=abc123&x=1",
            "client_secret: s3cr3t",
        ] {
            let r = redact(text);
            assert!(
                !r.text.contains("hunter2")
                    && !r.text.contains("abc123")
                    && !r.text.contains("s3cr3t"),
                "{r:?}"
            );
            assert!(r.leaks.is_empty(), "{r:?}");
        }
        assert!(redact(r#"{"user": "bob"}"#).text.contains("bob"));
    }

    #[test]
    fn ordinary_text_is_untouched() {
        let t = "The server had an error while processing your request (HTTP 500).";
        assert_eq!(
            redact(t),
            Redacted {
                text: t.into(),
                leaks: vec![]
            }
        );
    }
}
