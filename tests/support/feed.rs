//! An Atom feed as a blog serves one (RFC 4287): entries newest first, a strong `ETag`
//! over the document, `If-None-Match` answered 304, and an outage on demand.

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
    pub url: String,
}

impl FeedServer {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/feed.xml", axum::routing::get(serve))
            .with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            inner,
            url: format!("http://{addr}/feed.xml"),
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

async fn serve(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap) -> Response {
    let mut i = inner.lock().unwrap();
    i.requests += 1;
    if let Some(status) = i.failing {
        return (StatusCode::from_u16(status).unwrap(), "the blog is down").into_response();
    }
    let body = document(&i.entries);
    let etag = format!("\"{:x}\"", md5_like(&body));
    if headers.get("if-none-match").and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return (StatusCode::NOT_MODIFIED, [("etag", etag)]).into_response();
    }
    (
        StatusCode::OK,
        [
            (
                "content-type",
                "application/atom+xml; charset=utf-8".to_string(),
            ),
            ("etag", etag),
        ],
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
