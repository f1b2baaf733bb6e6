//! Job handlers by kind. Handlers must be idempotent: a job can be delivered
//! again after a crash, so the effect has to happen once (unique keys in the
//! database), not the delivery.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub type JobFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;
type HandlerFn = Arc<dyn Fn(serde_json::Value) -> JobFuture + Send + Sync>;
type DeadFn = Arc<dyn Fn(serde_json::Value, String) -> JobFuture + Send + Sync>;
pub type ManyFuture = Pin<Box<dyn Future<Output = Vec<anyhow::Result<()>>> + Send>>;
pub(crate) type ManyFn = Arc<dyn Fn(Vec<serde_json::Value>) -> ManyFuture + Send + Sync>;

/// A failure that retrying cannot fix (unreadable job, missing row): the
/// job goes to the dead letters at once instead of after every retry.
#[derive(Debug)]
pub struct Permanent(pub String);

impl std::fmt::Display for Permanent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Permanent {}

#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, HandlerFn>,
    dead: HashMap<String, DeadFn>,
    many: HashMap<String, ManyFn>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn on<F, Fut>(mut self, kind: &str, handler: F) -> Self
    where
        F: Fn(serde_json::Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.handlers
            .insert(kind.to_string(), Arc::new(move |p| Box::pin(handler(p))));
        self
    }

    /// Jobs of `kind` read together are handed over together (up to the
    /// worker's `group` at a time), so a handler can do their work in one
    /// transaction; it returns one result per payload, in order. Takes
    /// precedence over `on` for this kind.
    pub fn on_many<F, Fut>(mut self, kind: &str, handler: F) -> Self
    where
        F: Fn(Vec<serde_json::Value>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<anyhow::Result<()>>> + Send + 'static,
    {
        self.many
            .insert(kind.to_string(), Arc::new(move |p| Box::pin(handler(p))));
        self
    }

    /// Called once when a job of `kind` is given up on, with its error, so
    /// the failure becomes visible where users look (not only in Redis).
    pub fn on_dead<F, Fut>(mut self, kind: &str, handler: F) -> Self
    where
        F: Fn(serde_json::Value, String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.dead.insert(
            kind.to_string(),
            Arc::new(move |p, e| Box::pin(handler(p, e))),
        );
        self
    }

    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.handlers
            .keys()
            .chain(self.many.keys().filter(|k| !self.handlers.contains_key(*k)))
            .map(String::as_str)
    }

    pub(crate) fn get(&self, kind: &str) -> Option<HandlerFn> {
        self.handlers.get(kind).cloned()
    }

    pub(crate) fn many(&self, kind: &str) -> Option<ManyFn> {
        self.many.get(kind).cloned()
    }

    pub(crate) fn dead(&self, kind: &str) -> Option<DeadFn> {
        self.dead.get(kind).cloned()
    }
}
