//! A watcher kind a pipeline crate adds, as it adds a phase: its name, the JSON Schemas of
//! a watcher's `params` and of its items, and its poll. The engine does the rest, as for
//! the shipped kinds (`feed`, `github_issues`): what was seen and the `ETag` are kept and
//! committed with the starts, new items go through the intake path (checked against the
//! item schema, filtered, mapped, deduplicated), a failing poll counts toward the alarm and
//! the disable, and the operators' tools check `params` from the published declaration.
//!
//! ```text
//! pub fn spec() -> PipelineSpec {
//!     PipelineSpec::new()
//!         .definition("pipelines/summary/v1.json", include_str!("../v1.json"))
//!         .phase(Summarize)
//!         .watch_kind(JsonFeed)
//! }
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::pipeline::watch::{DeclaredKind, Poll};
use crate::ports::{Fetch, Fetched};

/// A kind of source a watcher polls.
pub trait WatchKind: Send + Sync + 'static {
    /// What a watcher names as its `kind`: a-z, 0-9 and `_`, not a shipped kind's.
    const NAME: &'static str;
    /// What it watches, one line, for the operators' tools.
    const ABOUT: &'static str;
    /// The JSON Schema of a watcher's `params` (checked when the watcher is saved, by the
    /// API and by the CLI from the published declaration).
    fn params_schema(&self) -> Value;
    /// The JSON Schema of its items, per event type (what `mapping` and `when` read).
    fn item_schemas(&self) -> BTreeMap<String, Value>;
    /// Asks the source what it holds now. An `Err` is a failed poll (counted; it says why,
    /// and is redacted before it is kept).
    fn poll(&self, ctx: &WatchContext<'_>) -> impl Future<Output = Result<Poll, String>> + Send;
}

/// What a poll has: the watcher's `params`, the validator of the source's last answer, and
/// HTTP through the stack's guarded client (no private addresses in a deployed stack).
pub struct WatchContext<'a> {
    pub params: &'a Value,
    pub etag: Option<&'a str>,
    pub(crate) fetch: &'a dyn Fetch,
}

impl<'a> WatchContext<'a> {
    pub(crate) fn new(params: &'a Value, etag: Option<&'a str>, fetch: &'a dyn Fetch) -> Self {
        Self {
            params,
            etag,
            fetch,
        }
    }

    /// The params as the kind reads them (its schema has checked them when saved).
    pub fn params_as<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_value(self.params.clone())
            .map_err(|e| format!("the watcher's params: {e}"))
    }

    /// `GET url` with `headers`, and `If-None-Match` with the last answer's `ETag` when
    /// there is one (a 304 then means nothing changed). `Err`: no answer at all.
    pub async fn get(&self, url: &str, headers: &[(&str, String)]) -> Result<Fetched, String> {
        let mut all = headers.to_vec();
        if let Some(tag) = self.etag {
            all.push(("if-none-match", tag.to_string()));
        }
        self.fetch.get(url, &all).await
    }
}

/// The code of a stack's watcher kinds, by name.
pub type WatchCode = Arc<BTreeMap<String, Arc<dyn PollSource>>>;

/// A watcher kind with its type erased (what the stack holds).
pub trait PollSource: Send + Sync {
    fn declared(&self) -> DeclaredKind;
    fn poll<'a>(&'a self, ctx: &'a WatchContext<'a>) -> BoxFuture<'a, Result<Poll, String>>;
}

impl<K: WatchKind> PollSource for K {
    fn declared(&self) -> DeclaredKind {
        DeclaredKind {
            name: K::NAME.to_string(),
            about: K::ABOUT.to_string(),
            params: self.params_schema(),
            items: self.item_schemas(),
        }
    }

    fn poll<'a>(&'a self, ctx: &'a WatchContext<'a>) -> BoxFuture<'a, Result<Poll, String>> {
        WatchKind::poll(self, ctx).boxed()
    }
}
