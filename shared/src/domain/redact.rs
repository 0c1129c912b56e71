//! Redaction before anything is stored or shown: error details, audit details, feedback,
//! integration health, alarms, DLQ attributes, API errors and logs.
//!
//! Two rules. Values of keys that name secrets (`password`, `token`, `api_key`,
//! `authorization`, `secret`, ...) are replaced, whatever they look like. Values that look
//! like known secret formats (see [`formats`]) are replaced wherever they appear, and are
//! reported, because such a value reaching a store means something leaked it: the caller
//! raises a critical `secret_leak_detected` alarm.
//!
//! Text is redacted before it is cut ([`excerpt`]): a cut first can leave half a secret that
//! no pattern matches. A text redacted upstream keeps its `[REDACTED:kind]` markers, and the
//! write path counts a marker in new text as a leak ([`markers`]), so the alarm is raised
//! however early the text was redacted.

use std::sync::LazyLock;

use base64::Engine as _;
use regex::{Captures, Regex};

/// A known secret format: its name, its pattern (groups named `keep` and `tail` are kept
/// before and after, the rest replaced) and, for formats ordinary words can look like, a
/// check of the match.
struct Format {
    name: &'static str,
    re: Regex,
    plausible: fn(&str) -> bool,
}

static PATTERNS: LazyLock<Vec<Format>> = LazyLock::new(|| {
    let always: fn(&str) -> bool = |_| true;
    [
        // A block cut short (no END line) is redacted to the end of the text.
        (
            "private_key",
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----(?:[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----|[\s\S]*)",
            always,
        ),
        (
            "url_credentials",
            r"(?i)(?P<keep>\b[a-z][a-z0-9+.-]*://)[^\s/:@]+:[^\s/@]+@",
            always,
        ),
        (
            "slack_webhook",
            r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]{16,}",
            always,
        ),
        ("aws_access_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", always),
        (
            "aws_secret_key",
            r#"(?i)(?P<keep>aws[_-]?secret[_-]?(?:access[_-]?)?key["']?\s*[:=]\s*["']?)[A-Za-z0-9/+]{40}\b"#,
            always,
        ),
        (
            "jwt",
            r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}",
            always,
        ),
        (
            "bearer_token",
            r"(?i)(?P<keep>\bbearer\s+)[A-Za-z0-9\-._~+/]{8,}=*",
            always,
        ),
        (
            "basic_credentials",
            r"(?i)(?P<keep>\bbasic\s+)[A-Za-z0-9+/]{6,}={0,2}",
            basic_is_credentials,
        ),
        ("stripe_key", r"\b[rs]k_(?:live|test)_[0-9A-Za-z]{10,}", always),
        (
            "provider_api_key",
            r"\bsk-(?:proj-|ant-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}",
            always,
        ),
        ("google_api_key", r"\bAIza[0-9A-Za-z_-]{30,}", always),
        (
            "github_token",
            r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})",
            always,
        ),
        (
            "slack_token",
            r"\b(?:xox[abposr]-[A-Za-z0-9-]{10,}|xapp-[0-9]+-[A-Za-z0-9-]{10,})",
            always,
        ),
        // A Standard Webhooks signing secret (what Shepherd's own subscriptions use).
        ("webhook_secret", r"\bwhsec_[A-Za-z0-9+/]{16,}={0,2}", always),
        // Credentials carried in a URL's query: an API key (`key=`, Google's), a
        // signature (`sig=`, a SAS token's; AWS's presigned `X-Amz-Signature`), an OAuth
        // authorization code (`code=`).
        (
            "url_secret_param",
            r"(?i)(?P<keep>[?&](?:key|sig|signature|code|x-amz-signature|x-amz-security-token|x-amz-credential)=)[^&\s#\x22']{6,}",
            always,
        ),
        // A cookie is a session: a request's or an answer's header (also quoted in JSON),
        // to the end of its line.
        (
            "cookie",
            // (No word boundary before it: an escaped newline, `\nCookie:`, has none.)
            r#"(?i)(?P<keep>(?:set-)?cookie"?\s*:\s*"?)[^\r\n"\\]{4,}"#,
            always,
        ),
        // An AWS secret access key with no name beside it: 40 characters of base64's
        // alphabet, both cases and a digit, not hex (a commit SHA is 40 hex digits).
        (
            "aws_secret_key",
            r"(?P<keep>^|[^A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?P<tail>$|[^A-Za-z0-9/+=])",
            bare_aws_secret,
        ),
    ]
    .into_iter()
    .map(|(name, re, plausible)| Format {
        name,
        re: Regex::new(re).expect("pattern compiles"),
        plausible,
    })
    .collect()
});

/// A bare 40-character run is an AWS secret key when it looks random in the way those do:
/// upper and lower case letters and a digit, not only hex digits, and most characters
/// different from each other. (An identifier of that length in base64 is rarer than a
/// leaked key is costly; a hex digest never matches.)
fn bare_aws_secret(m: &str) -> bool {
    let key: &str = m.trim_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '/' || c == '+'));
    if key.len() != 40 || key.chars().all(|c| c.is_ascii_hexdigit()) {
        return false;
    }
    let has = |f: fn(&char) -> bool| key.chars().any(|c| f(&c));
    let distinct: std::collections::BTreeSet<char> = key.chars().collect();
    has(char::is_ascii_uppercase)
        && has(char::is_ascii_lowercase)
        && has(char::is_ascii_digit)
        && distinct.len() >= 20
}

/// "Basic authentication" is English; "Basic dXNlcjpwYXNz" is `user:pass`.
fn basic_is_credentials(m: &str) -> bool {
    let token = m.split_whitespace().last().unwrap_or_default();
    base64::engine::general_purpose::STANDARD
        .decode(token)
        .is_ok_and(|raw| raw.contains(&b':'))
}

/// The formats recognised, by name (the name a `[REDACTED:name]` marker says).
pub fn formats() -> impl Iterator<Item = &'static str> {
    PATTERNS.iter().map(|f| f.name)
}

/// `[REDACTED:kind]`, left by an earlier redaction.
static MARKER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\[REDACTED(?::([a-z_]+))?\]").expect("pattern compiles"));

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
    for f in PATTERNS.iter() {
        let mut found = false;
        let next = f.re.replace_all(&out, |c: &Captures<'_>| {
            if !(f.plausible)(&c[0]) {
                return c[0].to_string();
            }
            found = true;
            let keep = c.name("keep").map_or("", |k| k.as_str());
            let tail = c.name("tail").map_or("", |k| k.as_str());
            format!("{keep}[REDACTED:{}]{tail}", f.name)
        });
        if found {
            out = next.into_owned();
            leaks.push(f.name);
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

/// `text` redacted, then cut to at most `max` bytes (on a character boundary, never inside
/// a marker), with an ellipsis where it was cut. Every place that shortens a text to store
/// or show it uses this.
pub fn excerpt(text: &str, max: usize) -> String {
    let text = redact(text).text;
    if text.len() <= max {
        return text;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    if let Some(m) = MARKER
        .find_iter(&text)
        .find(|m| m.start() < cut && cut < m.end())
    {
        cut = m.start();
    }
    let mut out = text[..cut].to_string();
    out.push('…');
    out
}

/// The kinds named by `[REDACTED:kind]` markers in `text`.
pub fn markers(text: &str) -> impl Iterator<Item = &str> {
    MARKER
        .captures_iter(text)
        .filter_map(|c| c.get(1).map(|m| m.as_str()))
}

/// Redacts every free text a transition stores (error details, feedback, audit details,
/// warnings); returns where a known secret format was found. A marker left by an earlier
/// redaction counts as found where the text is new in this transition (not in `before`,
/// the state it was decided on), so a leak redacted upstream is still alarmed, once.
pub fn scrub(t: &mut super::Transition, before: Option<&super::Production>) -> Vec<String> {
    let mut leaks = Vec::new();
    let mut scrub = |text: &mut String, old: Option<&str>, place: String| {
        let r = redact(text);
        let mut kinds: Vec<String> = r.leaks.iter().map(|k| k.to_string()).collect();
        if old != Some(text.as_str()) {
            for k in markers(text) {
                if !kinds.iter().any(|have| have == k) {
                    kinds.push(k.to_string());
                }
            }
        }
        for kind in kinds {
            leaks.push(format!("{kind} in {place}"));
        }
        *text = r.text;
    };
    let old_phase = |name: &str| before.and_then(|b| b.phases.iter().find(|p| p.name == name));
    for ph in t.production.phases.iter_mut() {
        let old = old_phase(&ph.name);
        if let Some(e) = ph.last_error.as_mut() {
            let was = old
                .and_then(|o| o.last_error.as_ref())
                .map(|e| e.detail.as_str());
            scrub(
                &mut e.detail,
                was,
                format!("phase {} error detail", ph.name),
            );
        }
        if let Some(f) = ph.feedback.as_mut() {
            let was = old.and_then(|o| o.feedback.as_deref());
            scrub(f, was, format!("phase {} feedback", ph.name));
        }
    }
    for e in t.audit.iter_mut() {
        scrub(&mut e.detail, None, format!("audit {} detail", e.kind));
    }
    let old_warnings = before.map(|b| b.warnings.as_slice()).unwrap_or_default();
    for w in t.production.warnings.iter_mut() {
        let was = old_warnings.iter().find(|o| *o == w).map(String::as_str);
        scrub(w, was, "a warning".into());
    }
    leaks
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One sample of every recognised format: the format, a text carrying it, the secret.
    /// The integration suite feeds the same corpus through provider errors.
    fn corpus() -> Vec<(String, String, String)> {
        let rows: Vec<serde_json::Value> =
            serde_json::from_str(include_str!("../../tests/fixtures/secrets.json")).unwrap();
        rows.iter()
            .map(|r| {
                let f = |k: &str| r[k].as_str().unwrap().to_string();
                (f("kind"), f("text"), f("secret"))
            })
            .collect()
    }

    #[test]
    fn every_format_of_the_corpus_is_replaced_and_reported() {
        let mut seen = std::collections::BTreeSet::new();
        for (kind, text, secret) in corpus() {
            let r = redact(&text);
            assert!(r.leaks.contains(&kind.as_str()), "{text}: {r:?}");
            assert!(!r.text.contains(&secret), "{text}: {r:?}");
            assert!(r.text.contains(&format!("[REDACTED:{kind}]")), "{r:?}");
            seen.insert(kind);
        }
        assert_eq!(
            seen,
            formats().map(String::from).collect(),
            "a format without a sample"
        );
    }

    /// Redacting before cutting: wherever the cut falls, no part of a secret survives (a
    /// cut first could leave half a key that no pattern matches).
    #[test]
    fn an_excerpt_never_holds_part_of_a_secret() {
        for (_, text, secret) in corpus() {
            let long = format!("{} {text} and more", "x".repeat(90));
            for max in 1..long.len() + 5 {
                let e = excerpt(&long, max);
                assert!(e.len() <= max + '…'.len_utf8(), "{max}: {e}");
                for n in 8..=secret.len() {
                    for start in 0..=secret.len() - n {
                        let part = &secret[start..start + n];
                        assert!(!e.contains(part), "cut at {max} kept {part:?}: {e}");
                    }
                }
                assert!(!e.contains("[REDACTED") || e.contains("]"), "{e}");
            }
        }
    }

    #[test]
    fn a_marker_in_new_text_is_a_leak_and_in_unchanged_text_is_not() {
        let redacted = redact("key sk-proj-AbCdEfGhIjKlMnOpQrStUvWx123").text;
        assert_eq!(markers(&redacted).collect::<Vec<_>>(), ["provider_api_key"]);
        assert_eq!(markers("plain text").count(), 0);
    }

    #[test]
    fn english_is_not_a_credential() {
        for t in [
            "Basic authentication is not supported",
            "a basic question",
            "see https://example.com/path@v2",
            // A commit SHA is 40 hex digits, not an AWS secret key.
            "commit 9fceb02d0ae598e95dc970b74767f19372d61af8 on main",
            "the key=value pairs and the code for it",
            "GET /repos/acme/widgets/pulls?head=acme:shepherd/x&base=main&state=open",
            "a cookie jar",
        ] {
            assert_eq!(redact(t).leaks, Vec::<&str>::new(), "{t}");
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
