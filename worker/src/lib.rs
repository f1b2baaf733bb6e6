//! The worker: consumes the job stream with a Redis consumer group
//! (at-least-once delivery), dispatches each job to its handler by kind,
//! reclaims jobs left pending by crashed workers, moves poison jobs to a
//! dead-letter stream, and stops gracefully on shutdown.

pub mod consumer;
pub mod deliveries;
pub mod egress;
pub mod fair;
pub mod feeds;
pub mod ingest;
pub mod publish;
pub mod reconciler;
pub mod registry;
pub mod rollups;
pub mod sla;

pub use consumer::{Worker, WorkerConfig};
pub use registry::{Permanent, Registry};

use rapport_store::Kv;
use rapport_store::jobs::{DELIVER_REPLY, INGEST};
use sea_orm::DatabaseConnection;
use std::sync::Arc;

/// Every production job handler.
pub fn handlers(db: DatabaseConnection, kv: Kv, publisher: Arc<publish::Publisher>) -> Registry {
    let ingestor = ingest::Ingestor {
        db,
        kv,
        secrets: publisher.secrets(),
    };
    let on_dead = ingestor.clone();
    Registry::new()
        .on(DELIVER_REPLY, move |p| {
            let publisher = publisher.clone();
            async move { publisher.handle(p).await }
        })
        .on_many(INGEST, move |p| {
            let i = ingestor.clone();
            async move { i.handle_many(p).await }
        })
        .on_dead(INGEST, move |p, e| {
            let i = on_dead.clone();
            async move { i.dead(p, e).await }
        })
}
