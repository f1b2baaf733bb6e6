//! Storage adapters shared by the API and the worker: database connection
//! and migrations, entities, the tenancy scope every query goes through,
//! storage errors, and Redis keys.

pub mod batch;
pub mod db;
pub mod entities;
pub mod errors;
pub mod import;
pub mod ingest;
pub mod jobs;
pub mod kv;
pub mod live_hub;
pub mod locks;
pub mod outbox;
pub mod pages;
pub mod raw_events;
pub mod replies;
pub mod reports;
pub mod secrets;
pub mod sla;
pub mod teams;
pub mod tenancy;

pub use errors::StoreError;
pub use kv::Kv;
/// The PostgreSQL channel every committed change to an agency's rows is
/// notified on (migration 13).
pub use rapport_migrations::CHANGE_CHANNEL;
pub use tenancy::{Scope, WorkspaceAccess};
