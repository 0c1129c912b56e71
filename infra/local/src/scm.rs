//! A fake source-control host with the shapes of GitHub's REST API (repositories, git
//! references, file contents, pull requests), as its reference documents them, and their
//! documented failures:
//!
//! - no or an unknown token: 401 `Bad credentials`; no `User-Agent`: 403;
//! - a token without write permission on a write: 403 `Resource not accessible by
//!   integration`;
//! - a reference that exists: 422 `Reference already exists`;
//! - a file that exists, written without its `sha`: 422 `"sha" wasn't supplied`; a stale
//!   `sha`: 409;
//! - a commit to a protected branch: 409 (its rules require a pull request);
//! - a second open pull request for the same head and base: 422 `Validation Failed` with
//!   `A pull request already exists for owner:branch.`
//!
//! Errors are `{"message", "documentation_url", "status"}`. A test can make the next
//! matching requests fail before the work (the host refused) or after it (the work happened
//! and the answer was lost: the worst case for a client).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const DOCS: &str = "https://docs.github.com/rest";

/// One branch: its head commit and its files.
#[derive(Debug, Clone, Default)]
struct Branch {
    sha: String,
    files: BTreeMap<String, Vec<u8>>,
}

/// A pull request as the host keeps it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pull {
    pub number: u64,
    pub title: String,
    pub body: String,
    pub head: String,
    pub base: String,
    pub state: String,
}

/// An issue as the host keeps it.
#[derive(Debug, Clone)]
struct Issue {
    number: u64,
    title: String,
    body: Option<String>,
    labels: Vec<String>,
    state: String,
    created_at: String,
    updated_at: String,
}

#[derive(Debug, Default)]
struct Repo {
    default_branch: String,
    branches: BTreeMap<String, Branch>,
    protected: BTreeSet<String>,
    pulls: Vec<Pull>,
    issues: Vec<Issue>,
}

/// When a fault applies to a matching request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Refuse the request without doing it.
    Before,
    /// Do the request's work, then answer the status instead (the answer is lost).
    After,
}

#[derive(Debug, Clone)]
struct Fault {
    method: String,
    path_suffix: String,
    status: u16,
    when: When,
    times: u32,
}

#[derive(Default)]
struct Inner {
    repos: BTreeMap<String, Repo>,
    /// Token -> may it write.
    tokens: BTreeMap<String, bool>,
    faults: Vec<Fault>,
    /// `METHOD /path` of every request received.
    requests: Vec<String>,
    /// (`METHOD /path`, token) of every request with a token.
    used_tokens: Vec<(String, String)>,
    next_number: u64,
    /// The primary rate limit's remaining requests (GitHub's `x-ratelimit-*` headers).
    rate_remaining: u64,
}

/// The primary rate limit an installation gets per hour.
const RATE_LIMIT: u64 = 5000;

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("0 ns is a valid time")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formats")
}

type Shared = Arc<Mutex<Inner>>;

/// The fake host; stops when dropped.
pub struct ScmServer {
    pub addr: SocketAddr,
    inner: Shared,
    _server: crate::Server,
}

/// The repository every local stack has: `acme/widgets`, default branch `main`
/// (protected, as a team's main branch is), with a README and a source file.
pub const REPOSITORY: &str = "acme/widgets";
/// The token the local stack's `ScmTokenParameter` holds (may write).
pub const TOKEN: &str = "local-scm-token";

fn sha_of(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    hex::encode(&h.finalize()[..20])
}

fn error(status: u16, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        code,
        axum::Json(
            json!({"message": message, "documentation_url": DOCS, "status": status.to_string()}),
        ),
    )
        .into_response()
}

fn validation(message: &str) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        axum::Json(json!({
            "message": "Validation Failed",
            "errors": [{"resource": "PullRequest", "code": "custom", "message": message}],
            "documentation_url": format!("{DOCS}/pulls/pulls#create-a-pull-request"),
            "status": "422"
        })),
    )
        .into_response()
}

impl ScmServer {
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let inner: Shared = Arc::default();
        {
            let mut i = inner.lock().expect("scm");
            i.tokens.insert(TOKEN.into(), true);
            i.rate_remaining = RATE_LIMIT;
            let files = BTreeMap::from([
                ("README.md".to_string(), b"# widgets\n".to_vec()),
                ("src/lib.rs".to_string(), b"pub fn widget() {}\n".to_vec()),
            ]);
            let main = Branch {
                sha: sha_of(&[b"initial"]),
                files,
            };
            i.repos.insert(
                REPOSITORY.into(),
                Repo {
                    default_branch: "main".into(),
                    branches: BTreeMap::from([("main".to_string(), main)]),
                    protected: BTreeSet::from(["main".to_string()]),
                    pulls: Vec::new(),
                    issues: Vec::new(),
                },
            );
        }
        let app = Router::new()
            .route("/repos/{owner}/{repo}", get(repository))
            .route("/repos/{owner}/{repo}/git/ref/{*reference}", get(get_ref))
            .route(
                "/repos/{owner}/{repo}/git/refs",
                axum::routing::post(create_ref),
            )
            .route(
                "/repos/{owner}/{repo}/contents/{*path}",
                get(get_contents).put(put_contents),
            )
            .route(
                "/repos/{owner}/{repo}/pulls",
                get(list_pulls).post(create_pull),
            )
            .route(
                "/repos/{owner}/{repo}/issues",
                get(list_issues).post(create_issue),
            )
            .layer(axum::middleware::from_fn_with_state(inner.clone(), gate))
            // GitHub takes files up to 100 MB (axum's default stops bodies at 2 MB).
            .layer(axum::extract::DefaultBodyLimit::max(100 << 20))
            .with_state(inner.clone());
        Ok(Self {
            addr,
            inner,
            _server: crate::Server::spawn(listener, app),
        })
    }

    /// The API's base URL (`ScmBaseUrl`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("scm")
    }

    /// Opens an issue with `labels` (as `POST /repos/{owner}/{repo}/issues` does): its number.
    pub fn open_issue(&self, repo: &str, title: &str, body: &str, labels: &[&str]) -> u64 {
        let mut i = self.lock();
        i.next_number += 1;
        let number = i.next_number;
        let now = now_rfc3339();
        i.repos
            .get_mut(repo)
            .expect("known repository")
            .issues
            .push(Issue {
                number,
                title: title.into(),
                body: Some(body.into()),
                labels: labels.iter().map(|l| l.to_string()).collect(),
                state: "open".into(),
                created_at: now.clone(),
                updated_at: now,
            });
        number
    }

    /// Sets the primary rate limit's remaining requests (0: every request is refused with
    /// 403 and `x-ratelimit-remaining: 0`, as GitHub does, until it is set again).
    pub fn set_rate_remaining(&self, n: u64) {
        self.lock().rate_remaining = n;
    }

    /// Makes `token` known; `write: false` is a read-only installation.
    pub fn set_token(&self, token: &str, write: bool) {
        self.lock().tokens.insert(token.into(), write);
    }

    /// Protects (or unprotects) a branch: commits to it are refused.
    pub fn protect(&self, repo: &str, branch: &str, protected: bool) {
        let mut i = self.lock();
        let r = i.repos.get_mut(repo).expect("repository exists");
        match protected {
            true => r.protected.insert(branch.into()),
            false => r.protected.remove(branch),
        };
    }

    /// Creates `branch` from `from`.
    pub fn branch(&self, repo: &str, branch: &str, from: &str) {
        let mut i = self.lock();
        let r = i.repos.get_mut(repo).expect("repository exists");
        let b = r.branches[from].clone();
        r.branches.insert(branch.into(), b);
    }

    /// The next `times` requests `METHOD ...path_suffix` fail with `status`.
    pub fn fail(&self, method: &str, path_suffix: &str, status: u16, when: When, times: u32) {
        self.lock().faults.push(Fault {
            method: method.into(),
            path_suffix: path_suffix.into(),
            status,
            when,
            times,
        });
    }

    /// Every pull request of `repo`.
    pub fn pulls(&self, repo: &str) -> Vec<Pull> {
        self.lock().repos[repo].pulls.clone()
    }

    /// A file's content on a branch.
    pub fn file(&self, repo: &str, branch: &str, path: &str) -> Option<String> {
        let i = self.lock();
        let b = i.repos[repo].branches.get(branch)?;
        b.files
            .get(path)
            .map(|c| String::from_utf8_lossy(c).into_owned())
    }

    /// Someone else commits `content` to `path` on `branch` (its head moves).
    pub fn commit(&self, repo: &str, branch: &str, path: &str, content: &str) {
        let mut i = self.lock();
        let b = i
            .repos
            .get_mut(repo)
            .and_then(|r| r.branches.get_mut(branch))
            .expect("branch exists");
        b.sha = sha_of(&[b.sha.as_bytes(), path.as_bytes(), content.as_bytes()]);
        b.files.insert(path.into(), content.as_bytes().to_vec());
    }

    /// (`METHOD /path`, token) of each request that carried a token.
    pub fn tokens_used(&self) -> Vec<(String, String)> {
        self.lock().used_tokens.clone()
    }

    /// `METHOD /path` of the requests received so far.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }
}

/// Authentication, permissions and faults, in front of every route.
async fn gate(
    State(inner): State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let headers = req.headers().clone();
    let fault = {
        let mut i = inner.lock().expect("scm");
        i.requests.push(format!("{method} {path}"));
        if headers.get("user-agent").is_none() {
            return error(
                403,
                "Request forbidden by administrative rules. Please make sure your request has a User-Agent header",
            );
        }
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("token "))
            })
            .map(str::to_string);
        if let Some(t) = &token {
            i.used_tokens.push((format!("{method} {path}"), t.clone()));
        }
        let Some(write) = token.and_then(|t| i.tokens.get(&t).copied()) else {
            return error(401, "Bad credentials");
        };
        if method != Method::GET && !write {
            return error(403, "Resource not accessible by integration");
        }
        if i.rate_remaining == 0 {
            let mut res = error(
                403,
                "API rate limit exceeded for installation. If you reach out to GitHub Support for help, please include the request ID.",
            );
            rate_headers(&mut res, 0);
            return res;
        }
        let found = i
            .faults
            .iter_mut()
            .find(|f| f.times > 0 && f.method == method.as_str() && path.ends_with(&f.path_suffix));
        found.map(|f| {
            f.times -= 1;
            (f.status, f.when)
        })
    };
    let mut res = match fault {
        Some((status, When::Before)) => error(status, "fault injected before the work"),
        Some((status, When::After)) => {
            let _ = next.run(req).await;
            error(status, "fault injected after the work")
        }
        None => next.run(req).await,
    };
    // A conditional request answered 304 does not count against the limit.
    let remaining = {
        let mut i = inner.lock().expect("scm");
        if res.status() != StatusCode::NOT_MODIFIED {
            i.rate_remaining = i.rate_remaining.saturating_sub(1);
        }
        i.rate_remaining
    };
    rate_headers(&mut res, remaining);
    res
}

/// GitHub's rate-limit headers (the REST API's "rate limits" reference).
fn rate_headers(res: &mut Response, remaining: u64) {
    let reset = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
    let h = res.headers_mut();
    for (k, v) in [
        ("x-ratelimit-limit", RATE_LIMIT.to_string()),
        ("x-ratelimit-remaining", remaining.to_string()),
        (
            "x-ratelimit-used",
            (RATE_LIMIT - remaining.min(RATE_LIMIT)).to_string(),
        ),
        ("x-ratelimit-reset", reset.to_string()),
        ("x-ratelimit-resource", "core".to_string()),
    ] {
        h.insert(k, v.parse().expect("header value"));
    }
}

fn repo_json(origin: &str, full: &str, r: &Repo) -> Value {
    let (owner, name) = full.split_once('/').unwrap_or((full, ""));
    json!({
        "id": 1, "node_id": "R_1", "name": name, "full_name": full, "private": true,
        "owner": {"login": owner, "type": "Organization"},
        "html_url": format!("{origin}/{full}"),
        "url": format!("{origin}/repos/{full}"),
        "default_branch": r.default_branch,
    })
}

fn origin(headers: &HeaderMap) -> String {
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

async fn repository(
    State(inner): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let full = format!("{owner}/{repo}");
    let i = inner.lock().expect("scm");
    match i.repos.get(&full) {
        Some(r) => axum::Json(repo_json(&origin(&headers), &full, r)).into_response(),
        None => error(404, "Not Found"),
    }
}

fn ref_json(origin: &str, full: &str, name: &str, sha: &str) -> Value {
    json!({
        "ref": format!("refs/heads/{name}"),
        "node_id": format!("REF_{name}"),
        "url": format!("{origin}/repos/{full}/git/refs/heads/{name}"),
        "object": {"type": "commit", "sha": sha, "url": format!("{origin}/repos/{full}/git/commits/{sha}")},
    })
}

async fn get_ref(
    State(inner): State<Shared>,
    Path((owner, repo, reference)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let full = format!("{owner}/{repo}");
    let i = inner.lock().expect("scm");
    let Some(r) = i.repos.get(&full) else {
        return error(404, "Not Found");
    };
    let branch = reference.strip_prefix("heads/").unwrap_or_default();
    match r.branches.get(branch) {
        Some(b) => axum::Json(ref_json(&origin(&headers), &full, branch, &b.sha)).into_response(),
        None => error(404, "Not Found"),
    }
}

async fn create_ref(
    State(inner): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let full = format!("{owner}/{repo}");
    let mut i = inner.lock().expect("scm");
    let Some(r) = i.repos.get_mut(&full) else {
        return error(404, "Not Found");
    };
    let (Some(reference), Some(sha)) = (body["ref"].as_str(), body["sha"].as_str()) else {
        return error(422, "Invalid request.\n\n\"ref\" and \"sha\" are required.");
    };
    let Some(name) = reference
        .strip_prefix("refs/heads/")
        .filter(|n| !n.is_empty())
    else {
        return error(422, "Reference name is invalid");
    };
    if r.branches.contains_key(name) {
        return error(422, "Reference already exists");
    }
    let Some(from) = r.branches.values().find(|b| b.sha == sha).cloned() else {
        return error(422, "Object does not exist");
    };
    r.branches.insert(name.to_string(), from);
    (
        StatusCode::CREATED,
        axum::Json(ref_json(&origin(&headers), &full, name, sha)),
    )
        .into_response()
}

fn content_json(origin: &str, full: &str, path: &str, bytes: &[u8]) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    // GitHub wraps the base64 at 60 characters.
    let wrapped: Vec<String> = b64
        .as_bytes()
        .chunks(60)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    json!({
        "type": "file", "encoding": "base64", "size": bytes.len(),
        "name": path.rsplit('/').next().unwrap_or(path), "path": path,
        "content": wrapped.join("\n") + "\n",
        "sha": sha_of(&[b"blob", bytes]),
        "url": format!("{origin}/repos/{full}/contents/{path}"),
    })
}

async fn get_contents(
    State(inner): State<Shared>,
    Path((owner, repo, path)): Path<(String, String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let full = format!("{owner}/{repo}");
    let i = inner.lock().expect("scm");
    let Some(r) = i.repos.get(&full) else {
        return error(404, "Not Found");
    };
    let branch = q.get("ref").unwrap_or(&r.default_branch);
    match r.branches.get(branch).and_then(|b| b.files.get(&path)) {
        Some(bytes) => {
            axum::Json(content_json(&origin(&headers), &full, &path, bytes)).into_response()
        }
        None => error(404, "Not Found"),
    }
}

async fn put_contents(
    State(inner): State<Shared>,
    Path((owner, repo, path)): Path<(String, String, String)>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let full = format!("{owner}/{repo}");
    let mut i = inner.lock().expect("scm");
    let Some(r) = i.repos.get_mut(&full) else {
        return error(404, "Not Found");
    };
    let (Some(message), Some(content)) = (body["message"].as_str(), body["content"].as_str())
    else {
        return error(
            422,
            "Invalid request.\n\n\"message\" and \"content\" are required.",
        );
    };
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(content) else {
        return error(422, "content is not valid Base64");
    };
    let branch = body["branch"]
        .as_str()
        .unwrap_or(&r.default_branch)
        .to_string();
    if r.protected.contains(&branch) {
        return error(
            409,
            "Repository rule violations found\n\nChanges must be made through a pull request.",
        );
    }
    let Some(b) = r.branches.get_mut(&branch) else {
        return error(404, &format!("Branch {branch} not found"));
    };
    let existing = b.files.get(&path).map(|c| sha_of(&[b"blob", c]));
    let status = match (existing, body["sha"].as_str()) {
        (Some(_), None) => return error(422, "Invalid request.\n\n\"sha\" wasn't supplied."),
        (Some(have), Some(given)) if have != given => {
            return error(409, &format!("{path} does not match {given}"));
        }
        (Some(_), Some(_)) => StatusCode::OK,
        (None, _) => StatusCode::CREATED,
    };
    let parent = b.sha.clone();
    b.sha = sha_of(&[
        parent.as_bytes(),
        path.as_bytes(),
        &bytes,
        message.as_bytes(),
    ]);
    b.files.insert(path.clone(), bytes.clone());
    let mut content = content_json(&origin(&headers), &full, &path, &bytes);
    content.as_object_mut().map(|c| c.remove("content"));
    (
        status,
        axum::Json(json!({
            "content": content,
            "commit": {"sha": b.sha, "message": message, "parents": [{"sha": parent}]},
        })),
    )
        .into_response()
}

fn pull_json(origin: &str, full: &str, owner: &str, p: &Pull) -> Value {
    json!({
        "id": p.number, "node_id": format!("PR_{}", p.number), "number": p.number,
        "state": p.state, "title": p.title, "body": p.body, "draft": false, "merged": false,
        "html_url": format!("{origin}/{full}/pull/{}", p.number),
        "url": format!("{origin}/repos/{full}/pulls/{}", p.number),
        "head": {"label": format!("{owner}:{}", p.head), "ref": p.head},
        "base": {"label": format!("{owner}:{}", p.base), "ref": p.base},
        "user": {"login": "shepherd[bot]", "type": "Bot"},
    })
}

async fn create_pull(
    State(inner): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let full = format!("{owner}/{repo}");
    let mut guard = inner.lock().expect("scm");
    let i = &mut *guard;
    let Some(r) = i.repos.get_mut(&full) else {
        return error(404, "Not Found");
    };
    let (Some(title), Some(head), Some(base)) = (
        body["title"].as_str(),
        body["head"].as_str(),
        body["base"].as_str(),
    ) else {
        return error(
            422,
            "Invalid request.\n\n\"title\", \"head\" and \"base\" are required.",
        );
    };
    let head = head.split_once(':').map(|(_, b)| b).unwrap_or(head);
    let (Some(h), Some(b)) = (r.branches.get(head), r.branches.get(base)) else {
        return validation(&format!("head {head} or base {base} does not exist"));
    };
    if h.sha == b.sha {
        return validation(&format!("No commits between {base} and {head}"));
    }
    if r.pulls
        .iter()
        .any(|p| p.state == "open" && p.head == head && p.base == base)
    {
        return validation(&format!(
            "A pull request already exists for {owner}:{head}."
        ));
    }
    i.next_number += 1;
    let pull = Pull {
        number: i.next_number,
        title: title.into(),
        body: body["body"].as_str().unwrap_or_default().into(),
        head: head.into(),
        base: base.into(),
        state: "open".into(),
    };
    let json = pull_json(&origin(&headers), &full, &owner, &pull);
    r.pulls.push(pull);
    (StatusCode::CREATED, axum::Json(json)).into_response()
}

async fn list_pulls(
    State(inner): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let full = format!("{owner}/{repo}");
    let i = inner.lock().expect("scm");
    let Some(r) = i.repos.get(&full) else {
        return error(404, "Not Found");
    };
    let state = q.get("state").map(String::as_str).unwrap_or("open");
    // `head` is `owner:branch`; a head without the owner matches nothing (as on GitHub).
    let head = q
        .get("head")
        .and_then(|h| h.strip_prefix(&format!("{owner}:")));
    let list: Vec<Value> = r
        .pulls
        .iter()
        .filter(|p| state == "all" || p.state == state)
        .filter(|p| !q.contains_key("head") || Some(p.head.as_str()) == head)
        .filter(|p| q.get("base").is_none_or(|b| *b == p.base))
        .map(|p| pull_json(&origin(&headers), &full, &owner, p))
        .collect();
    axum::Json(Value::Array(list)).into_response()
}

fn issue_json(origin: &str, full: &str, i: &Issue) -> Value {
    json!({
        "url": format!("{origin}/repos/{full}/issues/{}", i.number),
        "repository_url": format!("{origin}/repos/{full}"),
        "html_url": format!("{origin}/{full}/issues/{}", i.number),
        "id": 2_700_000_000u64 + i.number,
        "node_id": format!("I_{}", i.number),
        "number": i.number,
        "title": i.title,
        "user": {"login": "octo-ops", "id": 583231, "type": "User"},
        "labels": i.labels.iter().map(|l| json!({"name": l, "color": "0e8a16", "default": false})).collect::<Vec<_>>(),
        "state": i.state,
        "locked": false,
        "comments": 0,
        "created_at": i.created_at,
        "updated_at": i.updated_at,
        "closed_at": null,
        "author_association": "MEMBER",
        "body": i.body,
    })
}

/// `POST /repos/{owner}/{repo}/issues`: `{title, body?, labels?}`, 201.
async fn create_issue(
    State(inner): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let full = format!("{owner}/{repo}");
    let Some(title) = body["title"].as_str() else {
        return validation("title wasn't supplied.");
    };
    let mut i = inner.lock().expect("scm");
    if !i.repos.contains_key(&full) {
        return error(404, "Not Found");
    }
    i.next_number += 1;
    let now = now_rfc3339();
    let issue = Issue {
        number: i.next_number,
        title: title.into(),
        body: body["body"].as_str().map(String::from),
        labels: body["labels"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        state: "open".into(),
        created_at: now.clone(),
        updated_at: now,
    };
    let answer = issue_json(&origin(&headers), &full, &issue);
    i.repos.get_mut(&full).expect("checked").issues.push(issue);
    (StatusCode::CREATED, axum::Json(answer)).into_response()
}

/// `GET /repos/{owner}/{repo}/issues`: `state` (open), `labels` (comma-separated, all
/// required), `per_page` (30, at most 100), `page`; newest first. A weak `ETag` over the
/// page; `If-None-Match` with it answers 304. `Link` names the next and last pages.
async fn list_issues(
    State(inner): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let full = format!("{owner}/{repo}");
    let i = inner.lock().expect("scm");
    let Some(r) = i.repos.get(&full) else {
        return error(404, "Not Found");
    };
    let state = q.get("state").map(String::as_str).unwrap_or("open");
    let labels: Vec<&str> = q
        .get("labels")
        .map(|l| l.split(',').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let per_page: usize = q
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page: usize = q
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let mut matching: Vec<&Issue> = r
        .issues
        .iter()
        .filter(|x| state == "all" || x.state == state)
        .filter(|x| labels.iter().all(|l| x.labels.iter().any(|have| have == l)))
        .collect();
    matching.sort_by_key(|x| std::cmp::Reverse(x.number));
    let last = matching.len().div_ceil(per_page).max(1);
    let origin = origin(&headers);
    let list: Vec<Value> = matching
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|x| issue_json(&origin, &full, x))
        .collect();
    let body = Value::Array(list).to_string();
    let etag = format!("W/\"{}\"", sha_of(&[body.as_bytes()]));
    if headers.get("if-none-match").and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        let mut res = StatusCode::NOT_MODIFIED.into_response();
        res.headers_mut()
            .insert("etag", etag.parse().expect("etag"));
        return res;
    }
    let mut res = (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )],
        body,
    )
        .into_response();
    res.headers_mut()
        .insert("etag", etag.parse().expect("etag"));
    if page < last {
        let mut base: Vec<(String, String)> = q
            .iter()
            .filter(|(k, _)| *k != "page")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        base.sort();
        let query = |n: usize| {
            let mut pairs = base.clone();
            pairs.push(("page".into(), n.to_string()));
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish()
        };
        let link = format!(
            "<{origin}/repos/{full}/issues?{}>; rel=\"next\", <{origin}/repos/{full}/issues?{}>; rel=\"last\"",
            query(page + 1),
            query(last)
        );
        res.headers_mut()
            .insert("link", link.parse().expect("link"));
    }
    res
}
