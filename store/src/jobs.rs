//! The job stream: producers (API, webhook receivers, timers) append jobs
//! here; the worker consumes them with a consumer group. Keys live under the
//! deployment's Redis prefix.

use crate::Kv;
use redis::RedisResult;

/// Stream of pending jobs, relative to the key prefix.
pub const STREAM: &str = "jobs";
/// Jobs that failed too often or have no handler, kept for inspection.
pub const DEAD_LETTERS: &str = "jobs:dead";
/// The consumer group every worker joins.
pub const GROUP: &str = "workers";

/// Job kind: turn raw event `{"raw_event_id": "<uuid>"}` into messages.
pub const INGEST: &str = "ingest";

/// Job kind: publish outbound reply `{"message_id": "<uuid>"}` on its
/// platform. The fast path; the worker's sweep finds what Redis lost.
pub const DELIVER_REPLY: &str = "deliver_reply";

/// Appends a job; returns its stream id. `payload` is JSON text.
pub async fn enqueue(kv: &Kv, kind: &str, payload: &serde_json::Value) -> RedisResult<String> {
    redis::cmd("XADD")
        .arg(kv.key(STREAM))
        .arg("*")
        .arg("kind")
        .arg(kind)
        .arg("payload")
        .arg(payload.to_string())
        .query_async(&mut kv.conn())
        .await
}
