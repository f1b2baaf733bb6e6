//! The worker: consumes the job stream with a Redis consumer group
//! (at-least-once delivery), dispatches each job to its handler by kind,
//! reclaims jobs left pending by crashed workers, moves poison jobs to a
//! dead-letter stream, and stops gracefully on shutdown.

pub mod consumer;
pub mod registry;

pub use consumer::{Worker, WorkerConfig};
pub use registry::Registry;
