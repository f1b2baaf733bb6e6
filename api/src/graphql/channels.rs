//! Channels: where a workspace's mentions come from. Secrets are sealed at
//! rest and never returned.

use super::paging::{Order, keyset};
use super::types::{Workspace, decode, gid};
use super::{auth, state};
use crate::audit::AuditEvent;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use async_graphql::connection::Connection;
use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use rapport_domain::channel::{
    FeedUrl, HttpUrl, account_id, poll_interval, publishes, requirements, secret,
};
use rapport_domain::ingest::ChannelKind;
use rapport_domain::{Kind, Name, PageRequest};
use rapport_store::entities::channel;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, Set};
use serde_json::json;
use uuid::Uuid;

/// Where a channel's messages come from.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "ChannelKind")]
pub enum GqlChannelKind {
    /// X (Twitter) account, via webhooks.
    X,
    /// Facebook page, via Meta webhooks.
    Facebook,
    /// Instagram account, via Meta webhooks.
    Instagram,
    /// RSS or Atom feed, polled.
    Feed,
    /// Rapport's generic webhook schema, for the agency's own systems and
    /// platforms without an adapter.
    Generic,
}

impl From<GqlChannelKind> for ChannelKind {
    fn from(k: GqlChannelKind) -> Self {
        match k {
            GqlChannelKind::X => ChannelKind::X,
            GqlChannelKind::Facebook => ChannelKind::Facebook,
            GqlChannelKind::Instagram => ChannelKind::Instagram,
            GqlChannelKind::Feed => ChannelKind::Feed,
            GqlChannelKind::Generic => ChannelKind::Generic,
        }
    }
}

impl From<ChannelKind> for GqlChannelKind {
    fn from(k: ChannelKind) -> Self {
        match k {
            ChannelKind::X => GqlChannelKind::X,
            ChannelKind::Facebook => GqlChannelKind::Facebook,
            ChannelKind::Instagram => GqlChannelKind::Instagram,
            ChannelKind::Feed => GqlChannelKind::Feed,
            ChannelKind::Generic => GqlChannelKind::Generic,
        }
    }
}

/// Whether a channel takes in messages.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ChannelStatus {
    /// Receiving (webhooks) or being polled (feeds).
    Active,
    /// Webhooks answer 409 and store nothing; feeds are not polled.
    Paused,
    /// Secrets wiped; webhooks answer 410.
    Disconnected,
}

impl ChannelStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelStatus::Active => "ACTIVE",
            ChannelStatus::Paused => "PAUSED",
            ChannelStatus::Disconnected => "DISCONNECTED",
        }
    }

    fn parse(raw: &str) -> ApiResult<Self> {
        match raw {
            "ACTIVE" => Ok(ChannelStatus::Active),
            "PAUSED" => Ok(ChannelStatus::Paused),
            "DISCONNECTED" => Ok(ChannelStatus::Disconnected),
            other => Err(ApiError::internal(format!(
                "stored channel status {other:?}"
            ))),
        }
    }
}

pub struct Channel(pub channel::Model);

pub fn kind_of(m: &channel::Model) -> ApiResult<ChannelKind> {
    ChannelKind::parse(&m.kind).map_err(ApiError::internal)
}

/// A channel's publishing settings, checked against its kind: an access
/// token for platforms, a callback URL for GENERIC, nothing for feeds.
fn publishing(
    kind: ChannelKind,
    token: Option<&str>,
    callback: Option<&str>,
) -> ApiResult<(Option<String>, Option<String>)> {
    let platform = publishes(kind) && kind != ChannelKind::Generic;
    let token = match (token, platform) {
        (Some(t), true) => Some(secret("accessToken", t)?),
        (Some(_), false) => {
            return Err(ApiError::bad_input(
                "accessToken",
                "applies to X, FACEBOOK and INSTAGRAM channels",
            ));
        }
        (None, _) => None,
    };
    let callback = match (callback, kind == ChannelKind::Generic) {
        (Some(u), true) => Some(HttpUrl::parse("callbackUrl", u)?.as_str().to_string()),
        (Some(_), false) => {
            return Err(ApiError::bad_input(
                "callbackUrl",
                "applies to GENERIC channels only",
            ));
        }
        (None, _) => None,
    };
    Ok((token, callback))
}

/// Where a platform must send this channel's webhooks.
pub fn webhook_url(state: &AppState, id: Uuid) -> String {
    format!("{}/webhooks/{id}", state.settings.public_url)
}

/// A source of a workspace's messages: a platform account, a feed or a
/// generic webhook. Secrets and access tokens are never returned.
#[Object]
impl Channel {
    /// Global ID of the channel.
    async fn id(&self) -> ID {
        gid(Kind::Channel, self.0.id)
    }
    /// The workspace the channel belongs to.
    #[graphql(complexity = "super::LOOKUP_COST + child_complexity")]
    async fn workspace(&self, ctx: &Context<'_>) -> ApiResult<Workspace> {
        let v = auth(ctx).viewer()?;
        Ok(Workspace(
            v.scope
                .workspace(&state(ctx).db, self.0.workspace_id)
                .await?,
        ))
    }
    /// The platform or source type.
    async fn kind(&self) -> ApiResult<GqlChannelKind> {
        kind_of(&self.0).map(Into::into)
    }
    /// The channel's display name.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The brand's own account id on the platform; empty for a viewer who
    /// does not see the channel's workspace (its conversation was filed
    /// into theirs by brand keywords).
    async fn external_account_id(&self, ctx: &Context<'_>) -> &str {
        let sees = auth(ctx)
            .viewer()
            .is_ok_and(|v| v.scope.sees_workspace(self.0.workspace_id));
        if sees {
            &self.0.external_account_id
        } else {
            ""
        }
    }
    /// Whether the channel is taking in messages.
    async fn status(&self) -> ApiResult<ChannelStatus> {
        ChannelStatus::parse(&self.0.status)
    }
    /// Register this URL with the platform (null for polled feeds, for
    /// CLIENT_VIEWER, and for anyone who does not see its workspace).
    async fn webhook_url(&self, ctx: &Context<'_>) -> ApiResult<Option<String>> {
        if !sees_addresses(ctx, &self.0) {
            return Ok(None);
        }
        Ok(kind_of(&self.0)?
            .is_webhook()
            .then(|| webhook_url(state(ctx), self.0.id)))
    }
    /// FEED: the RSS or Atom address polled; null for other kinds, for
    /// CLIENT_VIEWER and for anyone who does not see its workspace (a feed
    /// address may carry a token).
    async fn feed_url(&self, ctx: &Context<'_>) -> Option<&str> {
        self.0
            .feed_url
            .as_deref()
            .filter(|_| sees_addresses(ctx, &self.0))
    }
    /// FEED: seconds between polls; null for other kinds.
    async fn poll_interval_seconds(&self) -> Option<i32> {
        self.0.poll_interval_seconds
    }
    /// FEED: how its polling goes (the worker's last fetch, its error and
    /// the backoff); null for other kinds.
    async fn feed_poll(&self, ctx: &Context<'_>) -> ApiResult<Option<FeedPoll>> {
        if kind_of(&self.0)? != ChannelKind::Feed {
            return Ok(None);
        }
        let state = &self.0.state;
        let at = |key: &str| {
            state
                .get(key)
                .and_then(serde_json::Value::as_str)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        Ok(Some(FeedPoll {
            last_polled_at: at("lastPolledAt"),
            next_poll_at: at("nextPollAt"),
            consecutive_failures: state
                .get("failures")
                .and_then(serde_json::Value::as_u64)
                .map_or(0, |n| i32::try_from(n).unwrap_or(i32::MAX)),
            // An error may quote the address, which may carry a token.
            last_error: state
                .get("lastError")
                .and_then(serde_json::Value::as_str)
                .filter(|_| sees_addresses(ctx, &self.0))
                .map(String::from),
        }))
    }
    /// Whether a signing secret is stored (it is never returned).
    async fn has_secret(&self) -> bool {
        self.0.secret_ciphertext.is_some()
    }
    /// Whether replies can be published: the channel is connected and an
    /// access token is stored (X, FACEBOOK, INSTAGRAM; never returned) or
    /// a callback URL and a signing secret are (GENERIC).
    async fn can_publish(&self) -> bool {
        rapport_store::replies::can_publish(&self.0)
    }
    /// GENERIC: where replies are POSTed, signed with the channel's secret;
    /// null for CLIENT_VIEWER (the agency's own systems) and for anyone who
    /// does not see its workspace.
    async fn callback_url(&self, ctx: &Context<'_>) -> Option<&str> {
        self.0
            .callback_url
            .as_deref()
            .filter(|_| sees_addresses(ctx, &self.0))
    }
    /// When the channel was connected.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When the channel's settings or status last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

/// How a FEED channel's polling goes.
#[derive(SimpleObject)]
pub struct FeedPoll {
    /// When the worker last fetched the feed (null: not yet).
    last_polled_at: Option<DateTime<Utc>>,
    /// When it fetches it next: the interval after a good fetch, backed
    /// off (doubling, up to an hour, never sooner than the interval) after
    /// failures.
    next_poll_at: Option<DateTime<Utc>>,
    /// Fetches that failed in a row since the last good one.
    consecutive_failures: i32,
    /// Why the last fetch failed (an HTTP status, a refused private
    /// address, a page that is no feed); null after a good fetch, and for
    /// CLIENT_VIEWER and anyone who does not see the channel's workspace.
    last_error: Option<String>,
}

/// Whether the viewer may see a channel's addresses: CLIENT_VIEWER reaches a
/// channel only through its conversations, and sees its name and kind.
/// Whether the viewer may see `c`'s addresses: a staff member who sees
/// its workspace. A conversation filed into another workspace by its brand
/// keywords (FEED, GENERIC) names a channel of a workspace the viewer may
/// be restricted away from.
fn sees_addresses(ctx: &Context<'_>, c: &channel::Model) -> bool {
    auth(ctx)
        .viewer()
        .is_ok_and(|v| v.role.can_write() && v.scope.sees_workspace(c.workspace_id))
}

/// A new channel. Which of the optional fields are required, allowed or
/// refused depends on `kind`.
#[derive(InputObject)]
pub struct ConnectChannelInput {
    /// The workspace to connect the channel to.
    workspace_id: ID,
    /// The platform or source type.
    kind: GqlChannelKind,
    /// A display name for the channel.
    name: String,
    /// The brand's account id on the platform (X user id, Facebook page id,
    /// Instagram account id). Optional for FEED and GENERIC.
    external_account_id: Option<String>,
    /// X consumer secret, Meta app secret, or the GENERIC signing secret.
    secret: Option<String>,
    /// Meta's `hub.verify_token`, for FACEBOOK and INSTAGRAM.
    verify_token: Option<String>,
    /// FEED only: the RSS or Atom address.
    feed_url: Option<String>,
    /// FEED only: 60 to 86400, default 300.
    poll_interval_seconds: Option<i32>,
    /// X, FACEBOOK, INSTAGRAM: the token replies are published with (X user
    /// access token, Meta page access token). Without it replies fail.
    access_token: Option<String>,
    /// GENERIC only: where replies are POSTed.
    callback_url: Option<String>,
}

/// Only the fields given change.
#[derive(InputObject)]
pub struct UpdateChannelInput {
    /// The channel to change.
    id: ID,
    /// New display name.
    name: Option<String>,
    /// New signing secret, for kinds that take one.
    secret: Option<String>,
    /// New Meta verify token (FACEBOOK and INSTAGRAM).
    verify_token: Option<String>,
    /// FEED only: new RSS or Atom address; the saved polling state (ETag,
    /// Last-Modified) is reset.
    feed_url: Option<String>,
    /// FEED only: new seconds between polls, 60 to 86400.
    poll_interval_seconds: Option<i32>,
    /// X, FACEBOOK, INSTAGRAM: new token replies are published with.
    access_token: Option<String>,
    /// GENERIC only: new address replies are POSTed to.
    callback_url: Option<String>,
}

/// The channel to act on.
#[derive(InputObject)]
pub struct ChannelIdInput {
    /// The channel's ID.
    id: ID,
}

#[derive(Default)]
pub struct ChannelQuery;

#[Object]
impl ChannelQuery {
    /// A workspace's channels, oldest first.
    #[graphql(complexity = "first.unwrap_or(20).clamp(0, 100) as usize * child_complexity")]
    async fn channels(
        &self,
        ctx: &Context<'_>,
        workspace_id: ID,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, Channel>> {
        let v = auth(ctx).viewer()?;
        v.require_writer()?;
        let page = PageRequest::parse(first, after.as_deref())?;
        let txn = v.scope.begin(&state(ctx).db).await?;
        let ws = v
            .scope
            .workspace(&txn, decode(Kind::Workspace, &workspace_id)?)
            .await?;
        let q = v
            .scope
            .select_in_workspaces::<channel::Entity>()
            .filter(channel::Column::WorkspaceId.eq(ws.id));
        let conn = keyset(
            &txn,
            q,
            channel::Column::Id,
            page,
            Order::OldestFirst,
            |c| c.id,
            Channel,
        )
        .await?;
        txn.commit().await?;
        Ok(conn)
    }
}

#[derive(Default)]
pub struct ChannelMutation;

/// A disconnected channel is gone for good: its credentials were wiped
/// and nothing may store new ones.
fn still_connected(c: &channel::Model) -> ApiResult<()> {
    if c.status == ChannelStatus::Disconnected.as_str() {
        return Err(ApiError::bad_input(
            "id",
            "this channel is disconnected; connect a new one",
        ));
    }
    Ok(())
}

impl ChannelMutation {
    async fn set_status(
        &self,
        ctx: &Context<'_>,
        id: &ID,
        status: ChannelStatus,
        action: &'static str,
    ) -> ApiResult<Channel> {
        let v = auth(ctx).viewer()?;
        v.require_manager()?;
        let id = decode(Kind::Channel, id)?;
        let txn = v.scope.begin(&state(ctx).db).await?;
        let current = v.scope.find::<channel::Entity, _>(&txn, id).await?;
        still_connected(&current)?;
        let mut am = current.into_active_model();
        am.status = Set(status.as_str().into());
        if status == ChannelStatus::Disconnected {
            am.secret_ciphertext = Set(None);
            am.verify_token_ciphertext = Set(None);
            am.access_token_ciphertext = Set(None);
            // A feed address may carry a token of the feed's owner, and a
            // callback URL a key of the agency's system.
            am.feed_url = Set(None);
            am.callback_url = Set(None);
        }
        am.updated_at = Set(Utc::now());
        let c = am.update(&txn).await?;
        AuditEvent::new(action)
            .workspace(c.workspace_id)
            .target("Channel", c.id)
            .by(&txn, v)
            .await?;
        txn.commit().await?;
        Ok(Channel(c))
    }
}

#[Object]
impl ChannelMutation {
    /// Connects a source to a workspace and returns its webhook URL.
    /// OWNER or ADMIN.
    async fn connect_channel(
        &self,
        ctx: &Context<'_>,
        input: ConnectChannelInput,
    ) -> ApiResult<Channel> {
        let v = auth(ctx).viewer()?;
        v.require_manager()?;
        let st = state(ctx);
        let kind: ChannelKind = input.kind.into();
        let name = Name::parse("name", &input.name)?;
        let account = account_id(input.external_account_id.as_deref(), kind)?;
        let (needs_secret, needs_token, needs_feed) = requirements(kind);
        let sealed = |field: &'static str,
                      raw: &Option<String>,
                      needed: bool|
         -> ApiResult<Option<Vec<u8>>> {
            match (raw, needed) {
                (Some(s), true) => Ok(Some(st.secrets.seal(secret(field, s)?.as_bytes()))),
                (None, true) => Err(ApiError::bad_input(
                    field,
                    format!("is required for {}", kind.as_str()),
                )),
                (Some(_), false) => Err(ApiError::bad_input(
                    field,
                    format!("does not apply to {}", kind.as_str()),
                )),
                (None, false) => Ok(None),
            }
        };
        let secret_ct = sealed("secret", &input.secret, needs_secret)?;
        let token_ct = sealed("verifyToken", &input.verify_token, needs_token)?;
        let (feed, poll) = match (&input.feed_url, needs_feed) {
            (Some(u), true) => (
                Some(FeedUrl::parse(u)?.as_str().to_string()),
                Some(poll_interval(input.poll_interval_seconds)?),
            ),
            (None, true) => return Err(ApiError::bad_input("feedUrl", "is required for FEED")),
            (Some(_), false) => {
                return Err(ApiError::bad_input(
                    "feedUrl",
                    "applies to FEED channels only",
                ));
            }
            (None, false) => (None, None),
        };
        let (access_ct, callback) = publishing(
            kind,
            input.access_token.as_deref(),
            input.callback_url.as_deref(),
        )?;
        let access_ct = access_ct.map(|t| st.secrets.seal(t.as_bytes()));
        let txn = v.scope.begin(&st.db).await?;
        let ws = v
            .scope
            .workspace(&txn, decode(Kind::Workspace, &input.workspace_id)?)
            .await?;
        let now = Utc::now();
        // The account connected before in this workspace: a disconnected
        // channel comes back (its id, webhook URL and conversations with
        // it), a connected one is a clear refusal.
        let before = if account.is_empty() {
            None
        } else {
            channel::Entity::find()
                .filter(channel::Column::AgencyId.eq(v.agency_id))
                .filter(channel::Column::WorkspaceId.eq(ws.id))
                .filter(channel::Column::Kind.eq(kind.as_str()))
                .filter(channel::Column::ExternalAccountId.eq(account.as_str()))
                .one(&txn)
                .await?
        };
        if let Some(before) = before {
            if before.status != ChannelStatus::Disconnected.as_str() {
                return Err(ApiError::bad_input(
                    "externalAccountId",
                    format!(
                        "this account is connected in this workspace already, as {:?}",
                        before.name
                    ),
                ));
            }
            let mut am = before.into_active_model();
            am.name = Set(name.into_string());
            am.secret_ciphertext = Set(secret_ct);
            am.verify_token_ciphertext = Set(token_ct);
            am.feed_url = Set(feed);
            am.poll_interval_seconds = Set(poll);
            am.access_token_ciphertext = Set(access_ct);
            am.callback_url = Set(callback);
            am.status = Set(ChannelStatus::Active.as_str().into());
            am.state = Set(json!({}));
            am.updated_at = Set(now);
            let c = am.update(&txn).await?;
            AuditEvent::new("connectChannel")
                .workspace(ws.id)
                .target("Channel", c.id)
                .details(json!({ "kind": c.kind, "name": c.name, "reconnected": true }))
                .by(&txn, v)
                .await?;
            txn.commit().await?;
            return Ok(Channel(c));
        }
        let id = Uuid::now_v7();
        let c = channel::ActiveModel {
            id: Set(id),
            agency_id: Set(v.agency_id),
            workspace_id: Set(ws.id),
            kind: Set(kind.as_str().into()),
            name: Set(name.into_string()),
            // FEED and GENERIC channels without an account id get their own
            // id, keeping the (workspace, kind, account) key unique.
            external_account_id: Set(if account.is_empty() {
                id.to_string()
            } else {
                account
            }),
            secret_ciphertext: Set(secret_ct),
            verify_token_ciphertext: Set(token_ct),
            feed_url: Set(feed),
            poll_interval_seconds: Set(poll),
            access_token_ciphertext: Set(access_ct),
            callback_url: Set(callback),
            status: Set(ChannelStatus::Active.as_str().into()),
            state: Set(json!({})),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await?;
        AuditEvent::new("connectChannel")
            .workspace(ws.id)
            .target("Channel", c.id)
            .details(json!({ "kind": c.kind, "name": c.name }))
            .by(&txn, v)
            .await?;
        txn.commit().await?;
        Ok(Channel(c))
    }

    /// Renames a channel, rotates its secrets, or changes a feed. OWNER or ADMIN.
    async fn update_channel(
        &self,
        ctx: &Context<'_>,
        input: UpdateChannelInput,
    ) -> ApiResult<Channel> {
        let v = auth(ctx).viewer()?;
        v.require_manager()?;
        let st = state(ctx);
        let id = decode(Kind::Channel, &input.id)?;
        let txn = v.scope.begin(&st.db).await?;
        let current = v.scope.find::<channel::Entity, _>(&txn, id).await?;
        still_connected(&current)?;
        let kind = kind_of(&current)?;
        let (takes_secret, takes_token, takes_feed) = requirements(kind);
        let mut changed = Vec::new();
        let mut am = current.clone().into_active_model();
        if let Some(n) = &input.name {
            am.name = Set(Name::parse("name", n)?.into_string());
            changed.push("name");
        }
        if let Some(s) = &input.secret {
            if !takes_secret {
                return Err(ApiError::bad_input("secret", "does not apply to this kind"));
            }
            am.secret_ciphertext = Set(Some(st.secrets.seal(secret("secret", s)?.as_bytes())));
            changed.push("secret");
        }
        if let Some(t) = &input.verify_token {
            if !takes_token {
                return Err(ApiError::bad_input(
                    "verifyToken",
                    "does not apply to this kind",
                ));
            }
            am.verify_token_ciphertext =
                Set(Some(st.secrets.seal(secret("verifyToken", t)?.as_bytes())));
            changed.push("verifyToken");
        }
        if input.feed_url.is_some() || input.poll_interval_seconds.is_some() {
            if !takes_feed {
                return Err(ApiError::bad_input(
                    "feedUrl",
                    "applies to FEED channels only",
                ));
            }
            if let Some(u) = &input.feed_url {
                am.feed_url = Set(Some(FeedUrl::parse(u)?.as_str().to_string()));
                am.state = Set(json!({}));
                changed.push("feedUrl");
            }
            if input.poll_interval_seconds.is_some() {
                am.poll_interval_seconds = Set(Some(poll_interval(input.poll_interval_seconds)?));
                // The next poll was scheduled on the old interval (or its
                // error backoff): poll at the next pass, then on the new one.
                if input.feed_url.is_none() {
                    let mut state = current.state.clone();
                    if let Some(o) = state.as_object_mut() {
                        o.remove("nextPollAt");
                    }
                    am.state = Set(state);
                }
                changed.push("pollIntervalSeconds");
            }
        }
        if input.access_token.is_some() || input.callback_url.is_some() {
            let (token, callback) = publishing(
                kind,
                input.access_token.as_deref(),
                input.callback_url.as_deref(),
            )?;
            if let Some(t) = token {
                am.access_token_ciphertext = Set(Some(st.secrets.seal(t.as_bytes())));
                changed.push("accessToken");
            }
            if callback.is_some() {
                am.callback_url = Set(callback);
                changed.push("callbackUrl");
            }
        }
        am.updated_at = Set(Utc::now());
        let c = am.update(&txn).await?;
        AuditEvent::new("updateChannel")
            .workspace(c.workspace_id)
            .target("Channel", c.id)
            .details(json!({ "changed": changed }))
            .by(&txn, v)
            .await?;
        txn.commit().await?;
        Ok(Channel(c))
    }

    /// Stops taking events from a channel until `resumeChannel`.
    async fn pause_channel(&self, ctx: &Context<'_>, input: ChannelIdInput) -> ApiResult<Channel> {
        self.set_status(ctx, &input.id, ChannelStatus::Paused, "pauseChannel")
            .await
    }

    /// Takes events from a paused channel again. OWNER or ADMIN; a
    /// disconnected channel cannot be resumed (BAD_USER_INPUT).
    async fn resume_channel(&self, ctx: &Context<'_>, input: ChannelIdInput) -> ApiResult<Channel> {
        self.set_status(ctx, &input.id, ChannelStatus::Active, "resumeChannel")
            .await
    }

    /// Disconnects for good: secrets are wiped; messages stay.
    async fn disconnect_channel(
        &self,
        ctx: &Context<'_>,
        input: ChannelIdInput,
    ) -> ApiResult<Channel> {
        self.set_status(
            ctx,
            &input.id,
            ChannelStatus::Disconnected,
            "disconnectChannel",
        )
        .await
    }
}
