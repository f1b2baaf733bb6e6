//! GraphQL subscriptions over WebSocket (graphql-transport-ws, and the
//! legacy graphql-ws): live conversation changes and SLA alerts of a
//! workspace, fed by the Redis pub/sub channels the worker publishes on.

use super::socket_auth::{LiveSlot, SocketCredentials, while_allowed};
use super::types::decode;
use super::{auth, state};
use crate::error::ApiError;
use async_graphql::{Context, ErrorExtensions, ID, SimpleObject, Subscription};
use futures_util::{Stream, StreamExt};
use rapport_domain::Kind;
use rapport_store::kv::Topic;
use serde_json::Value;

/// A conversation was created or changed.
#[derive(SimpleObject, Clone)]
pub struct ConversationEvent {
    /// The conversation's workspace.
    workspace_id: ID,
    /// The conversation that was created or changed; query it for details.
    conversation_id: ID,
    /// "created" or "updated".
    event: String,
}

/// A warning, breach or met promise, as it is recorded.
#[derive(SimpleObject, Clone)]
pub struct SlaAlert {
    /// SLA_WARNING, SLA_BREACHED or SLA_MET.
    kind: String,
    /// The deadline concerned: FIRST_RESPONSE, NEXT_RESPONSE or RESOLUTION.
    target: String,
    /// The conversation's workspace.
    workspace_id: ID,
    /// The conversation whose deadline it is.
    conversation_id: ID,
    /// The deadline, as an RFC 3339 timestamp.
    deadline: String,
    /// When the alert was recorded, as an RFC 3339 timestamp; null if the
    /// event carried none.
    fired_at: Option<String>,
}

fn text(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Messages of a workspace's pub/sub channel of `topic`, once the member is
/// known to see that workspace; each one is delivered only while they still
/// may (the feed ends with UNAUTHENTICATED after a logout, a removal or a
/// narrowed restriction).
async fn workspace_feed(
    ctx: &Context<'_>,
    workspace_id: &ID,
    topic: Topic,
) -> Result<impl Stream<Item = Result<String, ApiError>> + use<>, ApiError> {
    let v = auth(ctx).viewer()?;
    let st = state(ctx);
    let ws = v
        .scope
        .workspace(&st.db, decode(Kind::Workspace, workspace_id)?)
        .await?;
    // Counted against the socket's limit for as long as the feed runs.
    let slot = ctx
        .data_opt::<SocketCredentials>()
        .map(|c| LiveSlot::take(&c.live))
        .transpose()?;
    let feed = st.kv.subscribe(&st.kv.channel(topic, ws.id)).await?;
    Ok(
        while_allowed(st.clone(), v.clone(), ws.id, feed).map(move |item| {
            let _held = &slot;
            item
        }),
    )
}

/// A feed's message as `make` reads it; errors carry their code.
fn event<T>(
    item: Result<String, ApiError>,
    make: impl FnOnce(Value) -> T,
) -> Option<async_graphql::Result<T>> {
    match item {
        Ok(raw) => serde_json::from_str(&raw).ok().map(|v| Ok(make(v))),
        Err(e) => Some(Err(e.extend())),
    }
}

#[derive(Default)]
pub struct SubscriptionRoot;

/// Live updates over WebSocket (graphql-transport-ws or the legacy
/// graphql-ws protocol). Each subscription needs a signed-in member who
/// may see the workspace.
#[Subscription]
impl SubscriptionRoot {
    /// Conversations of a workspace as they are created or change.
    async fn conversation_updated(
        &self,
        ctx: &Context<'_>,
        workspace_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<ConversationEvent>> + use<>>
    {
        let stream = workspace_feed(ctx, &workspace_id, Topic::Conversations).await?;
        Ok(stream.filter_map(|item| async move {
            event(item, |v| ConversationEvent {
                workspace_id: ID(text(&v, "workspaceId")),
                conversation_id: ID(text(&v, "conversationId")),
                event: text(&v, "event"),
            })
        }))
    }

    /// SLA warnings, breaches and met promises of a workspace, live.
    async fn sla_alerts(
        &self,
        ctx: &Context<'_>,
        workspace_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<SlaAlert>> + use<>> {
        let stream = workspace_feed(ctx, &workspace_id, Topic::Sla).await?;
        Ok(stream.filter_map(|item| async move {
            event(item, |v| SlaAlert {
                kind: text(&v, "type"),
                target: text(&v, "target"),
                workspace_id: ID(text(&v, "workspaceId")),
                conversation_id: ID(text(&v, "conversationId")),
                deadline: text(&v, "deadline"),
                fired_at: v.get("firedAt").and_then(Value::as_str).map(String::from),
            })
        }))
    }
}
