//! A blog's feed, as an Atom document (RFC 4287) at `/feed.xml` and as a JSON Feed 1.1
//! document (jsonfeed.org) at `/feed.json`: entries newest first, a strong `ETag` over the
//! document, `If-None-Match` answered 304, and an outage on demand.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Default)]
struct Inner {
    /// (id, title, summary), oldest first.
    entries: Vec<(String, String, String)>,
    /// Answer this status instead of the feed, while set.
    failing: Option<u16>,
    requests: u32,
}

pub struct FeedServer {
    inner: Arc<Mutex<Inner>>,
    /// The Atom document's.
    pub url: String,
    /// The JSON Feed document's.
    pub json_url: String,
}

impl FeedServer {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/feed.xml", axum::routing::get(serve_atom))
            .route("/feed.json", axum::routing::get(serve_json))
            .with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            inner,
            url: format!("http://{addr}/feed.xml"),
            json_url: format!("http://{addr}/feed.json"),
        }
    }

    /// Publishes a post: its entry id.
    pub fn publish(&self, title: &str, summary: &str) -> String {
        let mut i = self.inner.lock().unwrap();
        let id = format!("urn:uuid:{}", uuid::Uuid::new_v4());
        i.entries.push((id.clone(), title.into(), summary.into()));
        id
    }

    /// Answers `status` instead of the feed (`None`: the feed again).
    pub fn fail(&self, status: Option<u16>) {
        self.inner.lock().unwrap().failing = status;
    }

    pub fn requests(&self) -> u32 {
        self.inner.lock().unwrap().requests
    }
}

fn document(entries: &[(String, String, String)]) -> String {
    let mut xml = String::from(
        r#"<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>Tides blog</title>
  <id>urn:uuid:60a76c80-d399-11d9-b93c-0003939e0af6</id>
  <updated>2026-12-07T10:00:00Z</updated>
  <author><name>Tide desk</name></author>
"#,
    );
    for (n, (id, title, summary)) in entries.iter().enumerate().rev() {
        xml.push_str(&format!(
            "  <entry>\n    <title>{title}</title>\n    <link href=\"https://blog.example.com/posts/{n}\"/>\n    <id>{id}</id>\n    <updated>2026-12-07T{:02}:00:00Z</updated>\n    <summary>{summary}</summary>\n  </entry>\n",
            n % 24
        ));
    }
    xml.push_str("</feed>\n");
    xml
}

/// The same entries as a JSON Feed 1.1 document (`version`, `title`, `items` newest
/// first, each with its `id`, `url`, `title`, `summary`, `content_text`, `date_published`).
fn json_document(entries: &[(String, String, String)]) -> String {
    let items: Vec<serde_json::Value> = entries
        .iter()
        .enumerate()
        .rev()
        .map(|(n, (id, title, summary))| {
            serde_json::json!({
                "id": id,
                "url": format!("https://blog.example.com/posts/{n}"),
                "title": title,
                "summary": summary,
                "content_text": format!("{title}. {summary}."),
                "date_published": format!("2026-12-07T{:02}:00:00Z", n % 24),
            })
        })
        .collect();
    serde_json::json!({
        "version": "https://jsonfeed.org/version/1.1",
        "title": "Tides blog",
        "home_page_url": "https://blog.example.com/",
        "feed_url": "https://blog.example.com/feed.json",
        "items": items,
    })
    .to_string()
}

async fn serve_atom(state: State<Arc<Mutex<Inner>>>, headers: HeaderMap) -> Response {
    serve(
        state,
        headers,
        document,
        "application/atom+xml; charset=utf-8",
    )
}

async fn serve_json(state: State<Arc<Mutex<Inner>>>, headers: HeaderMap) -> Response {
    serve(state, headers, json_document, "application/feed+json")
}

fn serve(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    render: fn(&[(String, String, String)]) -> String,
    content_type: &str,
) -> Response {
    let mut i = inner.lock().unwrap();
    i.requests += 1;
    if let Some(status) = i.failing {
        return (StatusCode::from_u16(status).unwrap(), "the blog is down").into_response();
    }
    let body = render(&i.entries);
    let etag = format!("\"{:x}\"", md5_like(&body));
    if headers.get("if-none-match").and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return (StatusCode::NOT_MODIFIED, [("etag", etag)]).into_response();
    }
    (
        StatusCode::OK,
        [("content-type", content_type.to_string()), ("etag", etag)],
        body,
    )
        .into_response()
}

/// A validator that changes when the document does.
fn md5_like(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}
