//! Outgoing webhook subscriptions: where the agency hears about warnings
//! and breaches, and the delivery log of each.

use super::paging::{Order, keyset};
use super::types::{decode, gid};
use super::{auth, state};
use crate::audit::AuditEvent;
use crate::error::{ApiError, ApiResult};
use async_graphql::connection::Connection;
use async_graphql::{Context, ID, InputObject, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};
use rapport_domain::channel::secret;
use rapport_domain::{Kind, PageRequest};
use rapport_store::entities::{webhook_delivery, webhook_subscription};
use rapport_store::outbox::EVENT_TYPES;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde_json::json;
use uuid::Uuid;

pub struct WebhookSubscription(pub webhook_subscription::Model);

/// An agency URL that receives a workspace's SLA events as signed POST
/// requests.
#[Object]
impl WebhookSubscription {
    /// Global ID of the subscription.
    async fn id(&self) -> ID {
        gid(Kind::WebhookSubscription, self.0.id)
    }
    /// The http(s) URL events are POSTed to.
    async fn url(&self) -> &str {
        &self.0.url
    }
    /// The event types sent: any of SLA_WARNING, SLA_BREACHED, SLA_MET,
    /// REPLY_FAILED.
    async fn events(&self) -> Vec<String> {
        serde_json::from_value(self.0.events.clone()).unwrap_or_default()
    }
    /// False once deleted with `deleteWebhookSubscription`.
    async fn active(&self) -> bool {
        self.0.active
    }
    /// When the subscription was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// The delivery log, newest first.
    #[graphql(complexity = "first.unwrap_or(20).clamp(0, 100) as usize * child_complexity")]
    async fn deliveries(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, WebhookDelivery>> {
        let v = auth(ctx).viewer()?;
        let page = PageRequest::parse(first, after.as_deref())?;
        let q = v
            .scope
            .select::<webhook_delivery::Entity>()
            .filter(webhook_delivery::Column::SubscriptionId.eq(self.0.id));
        keyset(
            &state(ctx).db,
            q,
            webhook_delivery::Column::Id,
            page,
            Order::NewestFirst,
            |d| d.id,
            WebhookDelivery,
        )
        .await
    }
}

pub struct WebhookDelivery(pub webhook_delivery::Model);

/// One event sent (or being sent) to a webhook subscription, with its
/// retries.
#[Object]
impl WebhookDelivery {
    /// Also sent as `X-Rapport-Delivery`, the same on every retry.
    async fn id(&self) -> String {
        self.0.id.to_string()
    }
    /// SLA_WARNING, SLA_BREACHED, SLA_MET or REPLY_FAILED.
    async fn event_type(&self) -> &str {
        &self.0.event_type
    }
    /// PENDING, DELIVERED or FAILED (gave up after 10 attempts).
    async fn status(&self) -> &str {
        &self.0.status
    }
    /// Attempts made so far.
    async fn attempts(&self) -> i32 {
        self.0.attempts
    }
    /// Why the latest attempt failed; null before any attempt and once
    /// delivered.
    async fn last_error(&self) -> Option<&str> {
        self.0.last_error.as_deref()
    }
    /// While PENDING: when the next attempt is due.
    async fn next_attempt_at(&self) -> DateTime<Utc> {
        self.0.next_attempt_at
    }
    /// When the URL accepted it; null unless DELIVERED.
    async fn delivered_at(&self) -> Option<DateTime<Utc>> {
        self.0.delivered_at
    }
    /// The JSON body sent.
    async fn payload(&self) -> Json<serde_json::Value> {
        Json(self.0.payload.clone())
    }
}

/// A new webhook subscription.
#[derive(InputObject)]
pub struct CreateWebhookSubscriptionInput {
    /// The workspace whose events are sent.
    workspace_id: ID,
    /// An http(s) URL that answers 2xx when it has the event.
    url: String,
    /// Any of SLA_WARNING, SLA_BREACHED, SLA_MET (an SLA event recorded),
    /// REPLY_FAILED (a reply the platform refused, or whose every attempt
    /// failed).
    events: Vec<String>,
    /// Signs each request: `X-Rapport-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
    secret: String,
}

/// The subscription to delete.
#[derive(InputObject)]
pub struct DeleteWebhookSubscriptionInput {
    /// The subscription's ID.
    id: ID,
}

/// Result of `deleteWebhookSubscription`.
#[derive(SimpleObject)]
pub struct DeleteWebhookSubscriptionPayload {
    /// ID of the subscription that was deleted.
    deleted_subscription_id: ID,
}

#[derive(Default)]
pub struct WebhookQuery;

#[Object]
impl WebhookQuery {
    /// OWNER or ADMIN.
    #[graphql(complexity = "super::FEW_COST * child_complexity")]
    async fn webhook_subscriptions(
        &self,
        ctx: &Context<'_>,
        workspace_id: ID,
        #[graphql(
            default = false,
            desc = "Include deleted subscriptions (`active: false`), whose delivery log stays."
        )]
        include_deleted: bool,
    ) -> ApiResult<Vec<WebhookSubscription>> {
        let v = auth(ctx).viewer()?;
        v.require_manager()?;
        let db = &state(ctx).db;
        let ws = v
            .scope
            .workspace(db, decode(Kind::Workspace, &workspace_id)?)
            .await?;
        let mut q = v
            .scope
            .select::<webhook_subscription::Entity>()
            .filter(webhook_subscription::Column::WorkspaceId.eq(ws.id));
        if !include_deleted {
            q = q.filter(webhook_subscription::Column::Active.eq(true));
        }
        Ok(q.order_by_asc(webhook_subscription::Column::Id)
            .limit(super::MAX_LISTED)
            .all(db)
            .await?
            .into_iter()
            .map(WebhookSubscription)
            .collect())
    }
}

#[derive(Default)]
pub struct WebhookMutation;

#[Object]
impl WebhookMutation {
    /// Sends the workspace's SLA events to a URL of the agency. OWNER or ADMIN.
    async fn create_webhook_subscription(
        &self,
        ctx: &Context<'_>,
        input: CreateWebhookSubscriptionInput,
    ) -> ApiResult<WebhookSubscription> {
        let v = auth(ctx).viewer()?;
        v.require_manager()?;
        let parsed = rapport_domain::channel::HttpUrl::parse("url", &input.url)?;
        let url = parsed.as_str();
        if input.events.is_empty()
            || input
                .events
                .iter()
                .any(|e| !EVENT_TYPES.contains(&e.as_str()))
        {
            return Err(ApiError::bad_input(
                "events",
                format!("choose from {}", EVENT_TYPES.join(", ")),
            ));
        }
        let st = state(ctx);
        let sealed = st.secrets.seal(secret("secret", &input.secret)?.as_bytes());
        let txn = v.scope.begin(&st.db).await?;
        let ws = v
            .scope
            .workspace(&txn, decode(Kind::Workspace, &input.workspace_id)?)
            .await?;
        let now = Utc::now();
        let s = webhook_subscription::ActiveModel {
            id: Set(Uuid::now_v7()),
            agency_id: Set(v.agency_id),
            workspace_id: Set(ws.id),
            url: Set(url.to_string()),
            events: Set(json!(input.events)),
            secret_ciphertext: Set(sealed),
            active: Set(true),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await?;
        AuditEvent::new("createWebhookSubscription")
            .workspace(ws.id)
            .details(json!({ "url": s.url, "events": input.events }))
            .by(&txn, v)
            .await?;
        txn.commit().await?;
        Ok(WebhookSubscription(s))
    }

    /// Stops deliveries; the log stays. OWNER or ADMIN.
    async fn delete_webhook_subscription(
        &self,
        ctx: &Context<'_>,
        input: DeleteWebhookSubscriptionInput,
    ) -> ApiResult<DeleteWebhookSubscriptionPayload> {
        let v = auth(ctx).viewer()?;
        v.require_manager()?;
        let st = state(ctx);
        let txn = v.scope.begin(&st.db).await?;
        let s = v
            .scope
            .find::<webhook_subscription::Entity, _>(
                &txn,
                decode(Kind::WebhookSubscription, &input.id)?,
            )
            .await?;
        let ws = s.workspace_id;
        let mut am = s.into_active_model();
        am.active = Set(false);
        am.updated_at = Set(Utc::now());
        am.update(&txn).await?;
        AuditEvent::new("deleteWebhookSubscription")
            .workspace(ws)
            .by(&txn, v)
            .await?;
        txn.commit().await?;
        Ok(DeleteWebhookSubscriptionPayload {
            deleted_subscription_id: input.id,
        })
    }
}
