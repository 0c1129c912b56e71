//! What a watcher's source answers, read: an Atom or RSS document's entries (`feed-rs`),
//! a page of GitHub's "list repository issues" (pull requests, which that endpoint also
//! lists, left out), and the `Link` header's next page; and what a watcher kind a pipeline
//! crate adds declares (its parameters' and items' schemas), checked. Pure.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::domain::Millis;

/// The kinds the engine ships; a pipeline crate's kind takes another name.
pub const BUILT_IN_KINDS: &[&str] = &["feed", "github_issues"];

/// One item of a source: its identity there (a feed entry's id, an issue's number), its
/// dedupe key, its event type and the item as its kind's schema describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Polled {
    pub identity: String,
    pub dedupe_key: String,
    pub event_type: String,
    pub item: Value,
}

/// What one poll of a source found.
#[derive(Debug, Clone, PartialEq)]
pub enum Poll {
    /// The items the source holds now (newest first, as feeds list them; those not seen at
    /// the last poll are new) and the answer's validator (`ETag`), sent as `If-None-Match`
    /// on the next poll.
    Items {
        items: Vec<Polled>,
        etag: Option<String>,
    },
    /// Not modified since the last poll (an HTTP 304).
    Unchanged,
    /// The host's rate limit: poll again at this instant (not a failure).
    Limited(Millis),
}

/// What a watcher kind declares of itself, as the operators' tools read it (the stack
/// publishes it beside the pipelines' definitions): its name, what it watches, the JSON
/// Schema of a watcher's `params`, and its items' JSON Schema per event type (what a
/// watcher's `mapping` and `when` read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeclaredKind {
    pub name: String,
    pub about: String,
    /// The JSON Schema of a watcher's `params`.
    #[schema(value_type = Object)]
    pub params: Value,
    /// Event type -> the JSON Schema of its items.
    #[schema(value_type = Object)]
    pub items: BTreeMap<String, Value>,
}

impl DeclaredKind {
    /// Its name is a kind's (lowercase, digits, `_`; not a shipped kind's) and its schemas
    /// compile.
    pub fn check(&self) -> Result<(), String> {
        let name = &self.name;
        let shaped = !name.is_empty()
            && name.len() <= 40
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !shaped {
            return Err(format!(
                "watcher kind {name:?}: a kind's name is 1 to 40 of a-z, 0-9 and _, starting with a letter"
            ));
        }
        let taken = BUILT_IN_KINDS.contains(&name.as_str())
            || ["github", "standard", "schedule", "custom"].contains(&name.as_str());
        if taken {
            return Err(format!(
                "watcher kind {name:?} is the engine's own: give yours another name"
            ));
        }
        if self.items.is_empty() {
            return Err(format!(
                "watcher kind {name}: declare at least one event type of items"
            ));
        }
        super::contract::compile(&self.params)
            .map_err(|e| format!("watcher kind {name}: its params schema: {e}"))?;
        for (event_type, schema) in &self.items {
            super::contract::compile(schema).map_err(|e| {
                format!("watcher kind {name}: the schema of its {event_type:?} items: {e}")
            })?;
        }
        Ok(())
    }

    /// Checks a watcher's `params` against the kind's schema, naming the field
    /// (`params.url: "ftp://x" is not a "uri"`).
    pub fn check_params(&self, params: &Value) -> Result<(), String> {
        let v = super::contract::compile(&self.params)
            .map_err(|e| format!("watcher kind {}: its params schema: {e}", self.name))?;
        match super::contract::first_violation(&v, params, false) {
            None => Ok(()),
            Some((field, problem)) => Err(format!("params{}: {problem}", field.replace('/', "."))),
        }
    }

    /// Checks one item of `event_type` against its schema, naming the field.
    pub fn check_item(&self, event_type: &str, item: &Value) -> Result<(), String> {
        super::intake::check_item(
            &format!("{}#{event_type}", self.name),
            || self.items.get(event_type).cloned(),
            item,
        )
        .ok_or_else(|| format!("{} watchers do not make {event_type:?} items", self.name))?
    }
}

/// The entries of an Atom or RSS document, in document order.
pub fn feed_entries(body: &[u8]) -> Result<Vec<Polled>, String> {
    let feed = feed_rs::parser::parse(body).map_err(|e| format!("not an Atom or RSS feed: {e}"))?;
    Ok(feed
        .entries
        .into_iter()
        .map(|e| {
            let mut item = json!({
                "id": e.id,
                "title": e.title.map(|t| t.content).unwrap_or_default(),
            });
            if let Some(l) = e.links.first() {
                item["link"] = l.href.clone().into();
            }
            if let Some(s) = e.summary {
                item["summary"] = s.content.into();
            }
            if let Some(u) = e.updated.or(e.published) {
                item["updated"] = u.to_rfc3339().into();
            }
            Polled {
                identity: e.id.clone(),
                dedupe_key: e.id,
                event_type: "entry".into(),
                item,
            }
        })
        .collect())
}

/// One page of `GET /repos/{owner}/{repo}/issues`: its issues (not its pull requests),
/// each keyed by number and last update.
pub fn github_issues(body: &[u8], repository: &str) -> Result<Vec<Polled>, String> {
    let list: Vec<Value> = serde_json::from_slice(body)
        .map_err(|e| format!("the issues list is not a JSON array: {e}"))?;
    Ok(list
        .into_iter()
        .filter(|i| i.get("pull_request").is_none())
        .map(|i| {
            let number = i["number"].clone();
            let updated = i["updated_at"].as_str().unwrap_or_default().to_string();
            let item = json!({
                "number": number,
                "title": i["title"],
                "body": i["body"],
                "updated_at": i["updated_at"],
                "html_url": i["html_url"],
                "repository": repository,
            });
            Polled {
                identity: number.to_string(),
                dedupe_key: format!("{number}@{updated}"),
                event_type: "issue".into(),
                item,
            }
        })
        .collect())
}

/// The `rel="next"` URL of a `Link` header (RFC 8288), if any.
pub fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim() == "rel=\"next\"")
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atom_and_rss_entries_are_read_with_their_ids() {
        let atom = br#"<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>Tides blog</title><id>urn:uuid:60a76c80-d399-11d9-b93C-0003939e0af6</id>
  <updated>2026-12-07T10:00:00Z</updated>
  <entry><title>Spring tides explained</title><id>urn:uuid:1225c695-cfb8-4ebb-aaaa-80da344efa6a</id>
    <link href="https://blog.example.com/spring-tides"/><updated>2026-12-07T09:00:00Z</updated>
    <summary>Why some tides are higher.</summary></entry>
</feed>"#;
        let e = feed_entries(atom).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[0].identity,
            "urn:uuid:1225c695-cfb8-4ebb-aaaa-80da344efa6a"
        );
        assert_eq!(e[0].item["title"], "Spring tides explained");
        assert_eq!(e[0].item["link"], "https://blog.example.com/spring-tides");
        assert_eq!(e[0].item["summary"], "Why some tides are higher.");
        let rss = br#"<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>
<link>https://x.example</link><description>d</description>
<item><title>Neap tides</title><guid>https://x.example/neap</guid><description>Lower.</description></item>
</channel></rss>"#;
        let e = feed_entries(rss).unwrap();
        assert_eq!(
            (e[0].identity.as_str(), &e[0].item["title"]),
            ("https://x.example/neap", &json!("Neap tides"))
        );
        assert!(
            feed_entries(b"<html>")
                .unwrap_err()
                .starts_with("not an Atom or RSS feed")
        );
    }

    fn declared() -> DeclaredKind {
        DeclaredKind {
            name: "json_feed".into(),
            about: "a JSON Feed".into(),
            params: json!({"type": "object", "required": ["url"], "additionalProperties": false,
                "properties": {"url": {"type": "string", "format": "uri"}}}),
            items: BTreeMap::from([(
                "item".to_string(),
                json!({"type": "object", "required": ["id"],
                    "properties": {"id": {"type": "string"}, "title": {"type": "string"}}}),
            )]),
        }
    }

    #[test]
    fn a_declared_kind_checks_its_name_its_schemas_params_and_items_naming_the_field() {
        let k = declared();
        k.check().unwrap();
        for (name, why) in [
            ("feed", "the engine's own"),
            ("custom", "the engine's own"),
            ("Json-Feed", "a-z, 0-9 and _"),
            ("", "a-z, 0-9 and _"),
        ] {
            let bad = DeclaredKind {
                name: name.into(),
                ..declared()
            };
            let e = bad.check().unwrap_err();
            assert!(e.contains(why), "{name:?}: {e}");
        }
        let no_items = DeclaredKind {
            items: BTreeMap::new(),
            ..declared()
        };
        assert!(
            no_items
                .check()
                .unwrap_err()
                .contains("at least one event type")
        );
        let broken = DeclaredKind {
            params: json!({"type": "nonsense"}),
            ..declared()
        };
        assert!(broken.check().unwrap_err().contains("its params schema"));

        k.check_params(&json!({"url": "https://blog.example.com/feed.json"}))
            .unwrap();
        let e = k.check_params(&json!({"url": 7})).unwrap_err();
        assert!(e.starts_with("params.url: 7 is not of type"), "{e}");
        let e = k.check_params(&json!({})).unwrap_err();
        assert!(e.starts_with("params") && e.contains("url"), "{e}");
        let e = k
            .check_params(&json!({"url": "https://x.example", "token": "t"}))
            .unwrap_err();
        assert!(e.contains("token"), "{e}");

        k.check_item("item", &json!({"id": "1", "title": "t"}))
            .unwrap();
        let e = k.check_item("item", &json!({"id": 1})).unwrap_err();
        assert!(e.starts_with("id: 1 is not of type"), "{e}");
        let e = k.check_item("entry", &json!({"id": "1"})).unwrap_err();
        assert!(e.contains("\"entry\""), "{e}");
    }

    #[test]
    fn issues_leave_out_pull_requests_and_the_next_page_is_read_from_link() {
        let page = json!([
            {"number": 7, "title": "t", "body": null, "updated_at": "2026-12-07T09:20:01Z", "html_url": "h"},
            {"number": 8, "title": "pr", "updated_at": "x", "pull_request": {"url": "u"}}
        ]);
        let i = github_issues(page.to_string().as_bytes(), "acme/widgets").unwrap();
        assert_eq!(i.len(), 1);
        assert_eq!(i[0].dedupe_key, "7@2026-12-07T09:20:01Z");
        assert_eq!(i[0].item["repository"], "acme/widgets");
        let link = r#"<https://api.github.com/repositories/1/issues?page=2>; rel="next", <https://api.github.com/repositories/1/issues?page=4>; rel="last""#;
        assert_eq!(
            next_link(link).as_deref(),
            Some("https://api.github.com/repositories/1/issues?page=2")
        );
        assert_eq!(next_link(r#"<u>; rel="prev""#), None);
    }
}
