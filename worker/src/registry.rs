//! Job handlers by kind. Handlers must be idempotent: a job can be delivered
//! again after a crash, so the effect has to happen once (unique keys in the
//! database), not the delivery.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub type JobFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;
type HandlerFn = Arc<dyn Fn(serde_json::Value) -> JobFuture + Send + Sync>;

#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, HandlerFn>,
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

    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }

    pub(crate) fn get(&self, kind: &str) -> Option<HandlerFn> {
        self.handlers.get(kind).cloned()
    }
}
