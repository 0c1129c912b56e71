//! What a watcher's source answers, read: an Atom or RSS document's entries (`feed-rs`),
//! a page of GitHub's "list repository issues" (pull requests, which that endpoint also
//! lists, left out), and the `Link` header's next page. Pure.

use serde_json::{Value, json};

/// One item of a source: its identity there (a feed entry's id, an issue's number), its
/// dedupe key, its event type and the item as its kind's schema describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Polled {
    pub identity: String,
    pub dedupe_key: String,
    pub event_type: String,
    pub item: Value,
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
