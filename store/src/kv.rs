//! Redis access with a per-deployment key prefix, so several deployments and
//! parallel tests share one Redis without seeing each other's keys.

use redis::RedisResult;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

#[derive(Clone)]
pub struct Kv {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
    /// Every live feed of the process, on one pub/sub connection.
    live: std::sync::Arc<crate::live_hub::LiveHub>,
}

/// What a workspace's live pub/sub channel carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topic {
    /// `{"workspaceId","conversationId","event"}` per changed conversation.
    Conversations,
    /// SLA warnings, breaches and met promises as they are recorded.
    Sla,
}

impl Kv {
    pub async fn connect(url: &str, prefix: &str) -> RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(3)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        Ok(Self {
            live: std::sync::Arc::new(crate::live_hub::LiveHub::new(client.clone())),
            client,
            conn,
            prefix: prefix.trim_end_matches(':').to_string(),
        })
    }

    /// `<prefix>:<suffix>`.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.prefix)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// A dedicated connection without a response timeout, for blocking reads
    /// (XREADGROUP BLOCK) that must not hold up the shared multiplexed one.
    pub async fn blocking_conn(&self) -> RedisResult<redis::aio::MultiplexedConnection> {
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(3)))
            .set_response_timeout(None);
        self.client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
    }

    /// The pub/sub channel of a workspace's live topic:
    /// `<prefix>:<topic>:<workspace uuid>`.
    pub fn channel(&self, topic: Topic, workspace: uuid::Uuid) -> String {
        let topic = match topic {
            Topic::Conversations => "conversations",
            Topic::Sla => "sla",
        };
        self.key(&format!("{topic}:{workspace}"))
    }

    /// Messages published on `channel` (see [`Kv::channel`]) from now on,
    /// as text; the stream ends when the connection to Redis is lost. All
    /// of a process's feeds share one connection (see crate::live_hub).
    pub async fn subscribe(
        &self,
        channel: &str,
    ) -> RedisResult<impl futures_core::Stream<Item = String> + Send + use<>> {
        self.live.subscribe(channel).await
    }

    /// Live updates: one message per changed conversation on
    /// `<prefix>:conversations:<workspace id>`. Best effort: the database
    /// already holds the truth.
    pub async fn conversation_changed(
        &self,
        workspace: uuid::Uuid,
        conversation: uuid::Uuid,
        event: &str,
    ) {
        self.conversations_changed([(workspace, conversation, event)])
            .await
    }

    /// [`Kv::conversation_changed`] for many `(workspace, conversation,
    /// "created" | "updated")` at once, in one round trip.
    pub async fn conversations_changed<'a>(
        &self,
        changes: impl IntoIterator<Item = (uuid::Uuid, uuid::Uuid, &'a str)>,
    ) {
        use rapport_domain::{GlobalId, Kind};
        let mut pipe = redis::pipe();
        let mut any = false;
        for (workspace, conversation, event) in changes {
            let msg = serde_json::json!({
                "workspaceId": GlobalId::encode(Kind::Workspace, workspace),
                "conversationId": GlobalId::encode(Kind::Conversation, conversation),
                "event": event,
            });
            pipe.cmd("PUBLISH")
                .arg(self.channel(Topic::Conversations, workspace))
                .arg(msg.to_string())
                .ignore();
            any = true;
        }
        if !any {
            return;
        }
        let sent: RedisResult<()> = pipe.query_async(&mut self.conn()).await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "publishing conversation updates failed");
        }
    }

    /// Live SLA alerts: each recorded event's payload on
    /// `<prefix>:sla:<workspace id>`. Best effort, as above: the event row
    /// is the record.
    pub async fn sla_alerts(&self, alerts: &[(uuid::Uuid, serde_json::Value)]) {
        if alerts.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for (workspace, payload) in alerts {
            pipe.cmd("PUBLISH")
                .arg(self.channel(Topic::Sla, *workspace))
                .arg(payload.to_string())
                .ignore();
        }
        let sent: RedisResult<()> = pipe.query_async(&mut self.conn()).await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, "publishing SLA alerts failed");
        }
    }

    pub async fn ping(&self) -> bool {
        redis::cmd("PING")
            .query_async::<String>(&mut self.conn())
            .await
            .is_ok()
    }

    /// Fixed-window counter: counts one hit on `suffix` and returns
    /// `Some(seconds until the window ends)` once more than `limit` hits fell
    /// in the current window of `window_secs`.
    pub async fn over_limit(
        &self,
        suffix: &str,
        limit: u64,
        window_secs: u64,
    ) -> RedisResult<Option<u64>> {
        let key = self.key(suffix);
        let (count, ttl): (u64, i64) = redis::pipe()
            .atomic()
            .cmd("INCR")
            .arg(&key)
            .cmd("EXPIRE")
            .arg(&key)
            .arg(window_secs)
            .arg("NX")
            .ignore()
            .cmd("TTL")
            .arg(&key)
            .query_async(&mut self.conn())
            .await?;
        Ok((count > limit).then_some(ttl.max(1) as u64))
    }

    /// Starts a limit's window over (a login that succeeded: the person's
    /// own tries no longer count against them).
    pub async fn clear_limit(&self, suffix: &str) -> RedisResult<()> {
        redis::cmd("DEL")
            .arg(self.key(suffix))
            .query_async(&mut self.conn())
            .await
    }
}
