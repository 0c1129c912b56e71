//! A small MCP server (streamable HTTP, the official `rmcp` SDK) standing in for a
//! publishing platform: one tool, `publish_video`, idempotent on the caller's key. It can
//! drop the connection of the next tool calls after doing the work, the worst case for a
//! client: the call happened, the answer never arrived.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{schemars, tool, tool_router};
use serde::{Deserialize, Serialize};

/// What the server saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct McpCalls {
    /// Tool calls received, by idempotency key (a repeat is not published twice).
    pub by_key: BTreeMap<String, u32>,
    /// Videos published.
    pub published: u32,
    /// Connections dropped on purpose.
    pub dropped: u32,
}

#[derive(Default)]
struct Shared {
    calls: Mutex<McpCalls>,
    drop_next: AtomicU32,
}

#[derive(Clone)]
struct Publisher {
    shared: Arc<Shared>,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct PublishArgs {
    title: String,
    description: String,
    scenes: u32,
    /// The caller's key: the same key publishes once.
    idempotency_key: String,
}

#[derive(Serialize, schemars::JsonSchema)]
struct Published {
    url: String,
    scenes: u32,
}

#[tool_router(server_handler)]
impl Publisher {
    #[tool(
        name = "publish_video",
        description = "Publish a video from its manifest; idempotent on idempotency_key"
    )]
    async fn publish(&self, Parameters(args): Parameters<PublishArgs>) -> Json<Published> {
        let mut calls = self.shared.calls.lock().expect("calls");
        let seen = calls
            .by_key
            .entry(args.idempotency_key.clone())
            .or_default();
        *seen += 1;
        if *seen == 1 {
            calls.published += 1;
        }
        let slug: String = args
            .title
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        let _ = args.description;
        Json(Published {
            url: format!(
                "https://videos.publisher.local/{slug}-{}",
                args.idempotency_key.len()
            ),
            scenes: args.scenes,
        })
    }
}

/// Cuts the answer of an armed tool call: the work is done, the client never hears.
async fn faults(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, 1 << 20).await else {
        return axum::http::StatusCode::BAD_REQUEST.into_response();
    };
    let is_call = String::from_utf8_lossy(&bytes).contains("\"tools/call\"");
    let res = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let armed = is_call
        && shared
            .drop_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    if !armed {
        return res;
    }
    let (parts, body) = res.into_parts();
    // Let the tool finish (its answer is the body), then send the headers and break off.
    let _ = to_bytes(body, 1 << 20).await;
    shared.calls.lock().expect("calls").dropped += 1;
    let broken = futures::stream::iter([
        Ok(Bytes::from_static(b"data: \nid: 0\n\n")),
        Err(std::io::Error::other(
            "connection dropped by the MCP server's fault",
        )),
    ]);
    Response::from_parts(parts, Body::from_stream(broken))
}

pub struct McpServer {
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl McpServer {
    pub async fn start(addr: std::net::SocketAddr) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let publisher = Publisher {
            shared: shared.clone(),
        };
        let service = StreamableHttpService::new(
            move || Ok(publisher.clone()),
            Arc::new(LocalSessionManager::default()),
            StreamableHttpServerConfig::default(),
        );
        let app = axum::Router::new()
            .nest_service("/mcp", service)
            .layer(axum::middleware::from_fn_with_state(shared.clone(), faults));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, shared, task })
    }

    /// The endpoint an MCP integration's `base_url` names.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Drops the connection of the next `n` tool calls after they ran.
    pub fn drop_next_calls(&self, n: u32) {
        self.shared.drop_next.store(n, Ordering::SeqCst);
    }

    pub fn calls(&self) -> McpCalls {
        self.shared.calls.lock().expect("calls").clone()
    }
}

impl Drop for McpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
