//! Publishing replies on their platforms. `sendReply` stores a reply QUEUED
//! and enqueues a `deliver_reply` job (the fast path); a sweep also picks up
//! every QUEUED reply whose next attempt is due, so retries happen and a
//! job lost with Redis is not a reply lost. An attempt first claims the row
//! (pushing its next attempt out, conditional on the row as read), so two
//! workers never publish the same reply at once; every request carries the
//! reply's id as `Idempotency-Key`, the same across retries.
//!
//! Outcomes: SENT with the platform's id; a retryable failure (rate limit,
//! server error, timeout) schedules the next attempt with the shared
//! backoff; a refusal, or the last attempt failing, is FAILED with the
//! platform's error, visible on the reply. Platforms ignore the key, so
//! every attempt after the first at a public X, Facebook or Instagram reply
//! first looks for it on the platform (`publish::lookup`): an answer lost
//! after publishing does not publish it twice.

use crate::egress;
use anyhow::Context;
use chrono::{SubsecRound, Utc};
use rapport_domain::crypto::SecretBox;
use rapport_domain::ingest::signature::generic_sign;
use rapport_domain::ingest::{ChannelKind, Visibility};
use rapport_domain::reply::publish::{self, Outcome, Outgoing};
use rapport_domain::retry::Backoff;
use rapport_domain::{GlobalId, Kind};
use rapport_store::Kv;
use rapport_store::entities::{author, channel, conversation, message};
use rapport_store::outbox::{self, REPLY_FAILED};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

pub const QUEUED: &str = "QUEUED";
pub const SENT: &str = "SENT";
pub const FAILED: &str = "FAILED";

#[derive(Clone, Debug)]
pub struct PublishConfig {
    /// X API base URL (`RAPPORT_X_API_URL`).
    pub x_api: String,
    /// Meta Graph API base URL, Facebook and Instagram (`RAPPORT_GRAPH_API_URL`).
    pub graph_api: String,
    pub backoff: Backoff,
    pub timeout: Duration,
    /// How often the sweep looks for due replies.
    pub tick: Duration,
    pub batch: u64,
    /// Whether GENERIC callback URLs may reach private addresses
    /// (`RAPPORT_ALLOW_PRIVATE_URLS`; see crate::egress). The platforms'
    /// API base URLs are the operator's, not a tenant's: not checked.
    pub allow_private: bool,
}

impl Default for PublishConfig {
    fn default() -> Self {
        Self {
            x_api: "https://api.x.com".into(),
            graph_api: "https://graph.facebook.com".into(),
            backoff: Backoff {
                base: Duration::from_secs(15),
                max: Duration::from_secs(1800),
                max_attempts: 8,
            },
            timeout: Duration::from_secs(15),
            tick: Duration::from_secs(2),
            batch: 50,
            allow_private: false,
        }
    }
}

/// A platform's answer to a post, read at most this far (its id or error
/// comes first).
const ANSWER_BYTES: usize = 64 * 1024;
/// A page of the brand's replies, read at most this far.
const LOOKUP_BYTES: usize = 4 * 1024 * 1024;

/// A request error as a reply keeps it: without the URL, which for a
/// GENERIC callback may carry a key and is hidden from most readers.
fn unaddressed(e: reqwest::Error) -> String {
    egress::describe(&e.without_url())
}

pub struct Publisher {
    db: DatabaseConnection,
    kv: Kv,
    secrets: Arc<SecretBox>,
    /// For the platforms' APIs (the operator's base URLs).
    http: reqwest::Client,
    /// For GENERIC callback URLs (a tenant's): public addresses only.
    callbacks: reqwest::Client,
    cfg: PublishConfig,
    /// Attempts under way. An attempt can take minutes (a lookup's pages
    /// and the post, each up to the timeout, against a slow or hanging
    /// endpoint): it runs beside the job consumer and the sweep, not in
    /// them, so one tenant's slow endpoint holds up neither ingestion nor
    /// the other replies; at most this many at once.
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// How a reply whose attempts all ended without a recorded answer fails:
/// it may have published.
const NO_ANSWER: &str = "no answer recorded after";

/// Attempts at once per worker process.
const IN_FLIGHT: u32 = 16;

/// `q` only while the reply's next attempt is still the one `reply` read:
/// of two workers changing it, one wins.
fn as_read(
    q: sea_orm::UpdateMany<message::Entity>,
    reply: &message::Model,
) -> sea_orm::UpdateMany<message::Entity> {
    match reply.next_delivery_at {
        Some(t) => q.filter(message::Column::NextDeliveryAt.eq(t)),
        None => q.filter(message::Column::NextDeliveryAt.is_null()),
    }
}

/// What looking on the platform for an earlier attempt showed.
#[derive(Debug, PartialEq)]
enum Looked {
    /// Published, with this id.
    Found(String),
    /// Read, and not there.
    NotThere,
    /// No look was made, or the platform would not show it (no lookup for
    /// the kind, a token without read access).
    CannotTell,
}

/// Everything one attempt needs, read before the request.
struct Loaded {
    reply: message::Model,
    conversation: conversation::Model,
    channel: channel::Model,
    author: author::Model,
}

impl Publisher {
    /// The key channel secrets are sealed with (shared with ingestion).
    pub fn secrets(&self) -> Arc<SecretBox> {
        self.secrets.clone()
    }

    pub fn new(
        db: DatabaseConnection,
        kv: Kv,
        secrets: Arc<SecretBox>,
        cfg: PublishConfig,
    ) -> anyhow::Result<Self> {
        let builder = || {
            reqwest::Client::builder()
                .timeout(cfg.timeout)
                .user_agent(concat!("Rapport/", env!("CARGO_PKG_VERSION")))
        };
        let http = builder().build()?;
        let callbacks = egress::guarded(builder(), cfg.allow_private).build()?;
        Ok(Self {
            db,
            kv,
            secrets,
            http,
            callbacks,
            cfg,
            in_flight: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT as usize)),
        })
    }

    /// The `deliver_reply` job: the attempt starts beside the consumer,
    /// and the job is done (the reply's row, QUEUED and due, is what
    /// counts: with every slot busy, or if this process stops, the sweep
    /// takes it).
    pub async fn handle(self: &Arc<Self>, payload: Value) -> anyhow::Result<()> {
        let id = payload
            .get("message_id")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| crate::Permanent("job has no message_id".into()))?;
        if let Ok(slot) = self.in_flight.clone().try_acquire_owned() {
            self.start(id, slot);
        }
        Ok(())
    }

    /// Runs one attempt in the background, holding `slot` until it ends.
    fn start(self: &Arc<Self>, id: Uuid, slot: tokio::sync::OwnedSemaphorePermit) {
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.attempt(id).await {
                tracing::warn!(reply = %id, error = %e, "a publish attempt failed");
            }
            drop(slot);
        });
    }

    /// One attempt at a reply if it is QUEUED and due; returns whether this
    /// worker made it.
    pub async fn attempt(&self, id: Uuid) -> anyhow::Result<bool> {
        let Some(reply) = message::Entity::find_by_id(id).one(&self.db).await? else {
            return Ok(false);
        };
        let now = Utc::now();
        let due = reply.next_delivery_at.is_none_or(|t| t <= now);
        if reply.delivery_status.as_deref() != Some(QUEUED) || !due {
            return Ok(false);
        }
        // A conversation's replies reach the customer in the order they
        // were written: while an earlier one is still queued (retrying),
        // this one waits ("it's fixed" must not come before "DM us").
        // Ids are time-ordered.
        let earlier = message::Entity::find()
            .select_only()
            .column(message::Column::NextDeliveryAt)
            .filter(message::Column::AgencyId.eq(reply.agency_id))
            .filter(message::Column::ConversationId.eq(reply.conversation_id))
            .filter(message::Column::Direction.eq("OUTBOUND"))
            .filter(message::Column::DeliveryStatus.eq(QUEUED))
            .filter(message::Column::Id.lt(reply.id))
            .into_tuple::<Option<chrono::DateTime<Utc>>>()
            .one(&self.db)
            .await?;
        if let Some(its_next) = earlier {
            // Put off until the earlier one is due again (its backoff),
            // looking again within 5 s (it may be in an attempt that ends
            // at once): a later sweep lists it behind the replies due
            // before, so a backlog of waiting replies cannot fill every
            // pass and starve the others.
            let wait = (its_next.unwrap_or(now).max(now) + chrono::Duration::seconds(1))
                .min(now + chrono::Duration::seconds(5));
            let put_off = message::Entity::update_many()
                .col_expr(
                    message::Column::NextDeliveryAt,
                    Expr::value(wait.trunc_subsecs(6)),
                )
                .filter(message::Column::Id.eq(id))
                .filter(message::Column::DeliveryStatus.eq(QUEUED));
            as_read(put_off, &reply).exec(&self.db).await?;
            return Ok(false);
        }
        // Long enough for every request an attempt makes (the pages of a
        // lookup, the post) and a margin; to the microsecond, as stored:
        // the outcome is recorded only while the claim is still this one.
        let requests = publish::LOOKUP_PAGES as u32 + 2;
        let lease =
            (now + chrono::Duration::from_std(self.cfg.timeout * requests)?).trunc_subsecs(6);
        // The attempt counts from its claim, and the claim clears the last
        // answer: one cut off (a worker stopped between the platform's
        // answer and its record) leaves no answer, so the next one looks
        // for what it may have published, even after a 429 that said
        // nothing was.
        let claim = message::Entity::update_many()
            .col_expr(message::Column::NextDeliveryAt, Expr::value(lease))
            .col_expr(
                message::Column::DeliveryAttempts,
                Expr::value(reply.delivery_attempts + 1),
            )
            .col_expr(
                message::Column::DeliveryError,
                Expr::value(Option::<String>::None),
            )
            .filter(message::Column::Id.eq(id))
            .filter(message::Column::DeliveryStatus.eq(QUEUED));
        if as_read(claim, &reply).exec(&self.db).await?.rows_affected != 1 {
            return Ok(false);
        }
        let outcome = match self.load(reply).await? {
            Ok(l) => {
                let (o, asked) = self.send(&l).await;
                self.record(&l.reply, &o, asked, lease).await?;
                o
            }
            Err((reply, why)) => {
                let o = Outcome::Refused(why);
                self.record(&reply, &o, None, lease).await?;
                o
            }
        };
        metrics::counter!("rapport_reply_publish_attempts_total", "outcome" => match outcome {
            Outcome::Sent(_) => "sent",
            Outcome::Retry(_) => "retry",
            Outcome::Refused(_) => "refused",
        })
        .increment(1);
        Ok(true)
    }

    #[allow(clippy::type_complexity)]
    async fn load(
        &self,
        reply: message::Model,
    ) -> anyhow::Result<Result<Loaded, (message::Model, String)>> {
        let Some(conversation) = conversation::Entity::find_by_id(reply.conversation_id)
            .one(&self.db)
            .await?
        else {
            return Ok(Err((reply, "conversation deleted".into())));
        };
        let Some(channel) = channel::Entity::find_by_id(reply.channel_id)
            .one(&self.db)
            .await?
        else {
            return Ok(Err((reply, "channel deleted".into())));
        };
        let Some(author) = author::Entity::find_by_id(conversation.author_id)
            .one(&self.db)
            .await?
        else {
            return Ok(Err((reply, "customer deleted".into())));
        };
        Ok(Ok(Loaded {
            reply,
            conversation,
            channel,
            author,
        }))
    }

    /// The attempt's outcome, and how long a rate-limited platform asked
    /// to wait before the next.
    async fn send(&self, l: &Loaded) -> (Outcome, Option<Duration>) {
        match self.try_send(l).await {
            Ok(done) => done,
            Err(e) => (e, None),
        }
    }

    async fn try_send(&self, l: &Loaded) -> Result<(Outcome, Option<Duration>), Outcome> {
        let kind =
            ChannelKind::parse(&l.channel.kind).map_err(|e| Outcome::Refused(e.to_string()))?;
        if l.channel.status == "DISCONNECTED" {
            return Err(Outcome::Refused("the channel is disconnected".into()));
        }
        let visibility =
            Visibility::parse(&l.reply.visibility).map_err(|e| Outcome::Refused(e.to_string()))?;
        let reply_id = GlobalId::encode(Kind::Message, l.reply.id);
        let conversation_id = GlobalId::encode(Kind::Conversation, l.conversation.id);
        let outgoing = Outgoing {
            kind,
            visibility,
            text: &l.reply.body,
            in_reply_to: l.reply.in_reply_to_external_id.as_deref(),
            recipient_id: &l.author.external_id,
            recipient_handle: &l.author.handle,
            account_id: &l.channel.external_account_id,
            reply_id: &reply_id,
            conversation_id: &conversation_id,
        };
        let req = publish::request(&outgoing).map_err(Outcome::Refused)?;
        // Every attempt so far ended without a recorded answer (cut off,
        // or its answer could not be stored): give up visibly rather than
        // send again and again, unless the platform shows it published.
        let exhausted = l.reply.delivery_attempts >= self.cfg.backoff.max_attempts;
        // An attempt was made before this one: counted, or (a reply sent
        // again with `retryReply`, its count back at zero) its error kept,
        // which `retryReply` does only when that attempt may have
        // published (`delivery_unsure`).
        let tried_before = l.reply.delivery_attempts > 0 || l.reply.delivery_error.is_some();
        let ambiguous_before =
            tried_before && publish::may_have_published(l.reply.delivery_error.as_deref());
        let looked = if exhausted || ambiguous_before {
            self.published_before(&outgoing, l).await?
        } else {
            Looked::CannotTell
        };
        if let Looked::Found(id) = looked {
            return Ok((Outcome::Sent(Some(id)), None));
        }
        if exhausted {
            return Err(Outcome::Refused(format!(
                "{NO_ANSWER} {} attempts",
                l.reply.delivery_attempts
            )));
        }
        let body = serde_json::to_vec(&req.body).map_err(|e| Outcome::Refused(e.to_string()))?;
        let builder = match kind {
            ChannelKind::Generic => {
                let url =
                    l.channel.callback_url.as_deref().ok_or_else(|| {
                        Outcome::Refused("the channel has no callback URL".into())
                    })?;
                let url = egress::checked(url, self.cfg.allow_private)
                    .map_err(|e| Outcome::Refused(format!("the callback URL is refused: {e}")))?;
                let secret = self.open(l.channel.secret_ciphertext.as_deref(), "signing secret")?;
                self.callbacks.post(url).header(
                    "x-rapport-signature",
                    generic_sign(&secret, &body, Utc::now().timestamp()),
                )
            }
            _ => self.platform(reqwest::Method::POST, kind, &req.path, &l.channel)?,
        };
        let (outcome, asked) = self.post(builder, body, kind, l).await;
        let last_attempt = l.reply.delivery_attempts + 1 >= self.cfg.backoff.max_attempts;
        Ok(match outcome {
            // The last attempt's answer was lost, maybe after the platform
            // published: look before calling it FAILED (an agent would
            // send the same words again).
            Outcome::Retry(e) if last_attempt && publish::may_have_published(Some(&e)) => {
                match self.published_before(&outgoing, l).await {
                    Ok(Looked::Found(id)) => (Outcome::Sent(Some(id)), None),
                    _ => (Outcome::Retry(e), asked),
                }
            }
            // X refuses a copy of what the account published: after an
            // attempt that may have published, which the look before this
            // one could not rule out, the copy is this reply. (Looked and
            // not there, the copy is another reply's: refused.)
            Outcome::Refused(e)
                if ambiguous_before
                    && looked == Looked::CannotTell
                    && publish::refused_as_duplicate(kind, &e) =>
            {
                tracing::info!(reply = %l.reply.id, "X holds this reply already; recorded as sent");
                (Outcome::Sent(None), None)
            }
            o => (o, asked),
        })
    }

    /// Posts a reply; its outcome, and the wait a rate limit asked for.
    async fn post(
        &self,
        builder: reqwest::RequestBuilder,
        body: Vec<u8>,
        kind: ChannelKind,
        l: &Loaded,
    ) -> (Outcome, Option<Duration>) {
        let resp = match builder
            .header("content-type", "application/json")
            .header("idempotency-key", l.reply.id.to_string())
            .body(body)
            .send()
            .await
        {
            Ok(resp) => resp,
            Err(e) => {
                return (
                    Outcome::Retry(format!("request failed: {}", unaddressed(e))),
                    None,
                );
            }
        };
        let status = resp.status().as_u16();
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok());
        let asked = (status == 429)
            .then(|| {
                rapport_domain::retry::asked_wait(
                    header("retry-after"),
                    header("x-rate-limit-reset"),
                    Utc::now().timestamp(),
                )
            })
            .flatten();
        // The id or the error is at the start; what follows is not read.
        match egress::body_at_most(resp, ANSWER_BYTES).await {
            Ok((bytes, _)) => (publish::outcome(kind, status, &bytes), asked),
            Err(e) => (
                Outcome::Retry(format!("reading the answer failed: {}", unaddressed(e))),
                asked,
            ),
        }
    }

    /// An earlier attempt may have been published though its answer was
    /// lost (a timeout, a server error, a worker stopped mid-request): the
    /// platform's id for it if the platform lists it (published since the
    /// reply was written, and not another reply's already). Where the
    /// platform cannot say now, the attempt is put off rather than made
    /// blind; where this token may not read it, it is sent (as without
    /// the check).
    async fn published_before(&self, o: &Outgoing<'_>, l: &Loaded) -> Result<Looked, Outcome> {
        let since = l.reply.created_at;
        let Some(path) = publish::lookup(o, since) else {
            return Ok(Looked::CannotTell);
        };
        let lost = |e: String| Outcome::Retry(format!("looking for an earlier attempt: {e}"));
        let mut page = path.clone();
        let mut found = None;
        for _ in 0..publish::LOOKUP_PAGES {
            let resp = self
                .platform(reqwest::Method::GET, o.kind, &page, &l.channel)?
                .send()
                .await
                .map_err(|e| lost(unaddressed(e)))?;
            let status = resp.status().as_u16();
            let (bytes, cut) = egress::body_at_most(resp, LOOKUP_BYTES)
                .await
                .map_err(|e| lost(unaddressed(e)))?;
            if cut {
                return Err(lost(format!("an answer over {LOOKUP_BYTES} bytes")));
            }
            match publish::published_in(o, status, &bytes, since) {
                publish::Earlier::Published(id) => {
                    found = Some(id);
                    break;
                }
                publish::Earlier::NotPublished => match publish::next_page(o, &path, &bytes, since)
                {
                    Some(next) => page = next,
                    None => return Ok(Looked::NotThere),
                },
                publish::Earlier::Unknown(e) => return Err(lost(e)),
                publish::Earlier::Unverifiable(e) => {
                    tracing::warn!(reply = %l.reply.id, error = %e, "an earlier attempt cannot be looked for; sending");
                    return Ok(Looked::CannotTell);
                }
            }
        }
        let Some(id) = found else {
            return Err(lost(format!(
                "more than {} pages of the brand's replies since this one was written",
                publish::LOOKUP_PAGES
            )));
        };
        let taken = message::Entity::find()
            .filter(message::Column::ChannelId.eq(l.reply.channel_id))
            .filter(message::Column::PlatformMessageId.eq(id.as_str()))
            .filter(message::Column::Id.ne(l.reply.id))
            .one(&self.db)
            .await
            .map_err(|e| lost(e.to_string()))?;
        if taken.is_some() {
            return Ok(Looked::NotThere); // another reply of ours, with the same words
        }
        tracing::info!(reply = %l.reply.id, platform_id = %id, "an earlier attempt was published; not sending again");
        Ok(Looked::Found(id))
    }

    /// A request to X's or Meta's API at `path`, with the channel's token.
    fn platform(
        &self,
        method: reqwest::Method,
        kind: ChannelKind,
        path: &str,
        channel: &channel::Model,
    ) -> Result<reqwest::RequestBuilder, Outcome> {
        let base = if kind == ChannelKind::X {
            &self.cfg.x_api
        } else {
            &self.cfg.graph_api
        };
        let token = self.open(channel.access_token_ciphertext.as_deref(), "access token")?;
        Ok(self
            .http
            .request(method, format!("{}{path}", base.trim_end_matches('/')))
            .bearer_auth(String::from_utf8_lossy(&token)))
    }

    fn open(&self, sealed: Option<&[u8]>, what: &str) -> Result<Vec<u8>, Outcome> {
        let sealed =
            sealed.ok_or_else(|| Outcome::Refused(format!("the channel has no {what}")))?;
        self.secrets
            .open(sealed)
            .map_err(|e| Outcome::Refused(format!("the channel's {what} cannot be read: {e}")))
    }

    /// Records an attempt's outcome, unless the attempt outlived its lease
    /// and another worker claimed the reply since (that worker's outcome
    /// stands: a late refusal here must not turn its SENT into FAILED).
    async fn record(
        &self,
        reply: &message::Model,
        o: &Outcome,
        asked: Option<Duration>,
        lease: chrono::DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let attempts = reply.delivery_attempts + 1;
        let now = Utc::now();
        let q = message::Entity::update_many()
            .col_expr(message::Column::DeliveryAttempts, Expr::value(attempts))
            .filter(message::Column::Id.eq(reply.id))
            .filter(message::Column::DeliveryStatus.eq(QUEUED))
            .filter(message::Column::NextDeliveryAt.eq(lease));
        // The error a FAILED outcome ends with.
        let mut failed_with: Option<&str> = None;
        let q = match o {
            Outcome::Sent(platform_id) => q
                .col_expr(message::Column::DeliveryStatus, Expr::value(SENT))
                .col_expr(message::Column::DeliveredAt, Expr::value(now))
                .col_expr(
                    message::Column::PlatformMessageId,
                    Expr::value(platform_id.clone()),
                )
                .col_expr(
                    message::Column::DeliveryError,
                    Expr::value(Option::<String>::None),
                )
                .col_expr(
                    message::Column::NextDeliveryAt,
                    Expr::value(Option::<chrono::DateTime<Utc>>::None),
                ),
            Outcome::Retry(e) => {
                let next = self.cfg.backoff.after_at_least(attempts, asked);
                tracing::warn!(reply = %reply.id, attempts, error = %e, gave_up = next.is_none(), "publishing a reply failed");
                let q = q.col_expr(message::Column::DeliveryError, Expr::value(e.clone()));
                match next {
                    Some(wait) => q.col_expr(
                        message::Column::NextDeliveryAt,
                        Expr::value(now + chrono::Duration::from_std(wait)?),
                    ),
                    None => {
                        failed_with = Some(e);
                        // Its answer lost, it may have published.
                        let unsure = publish::may_have_published(Some(e));
                        q.col_expr(message::Column::DeliveryStatus, Expr::value(FAILED))
                            .col_expr(message::Column::DeliveryUnsure, Expr::value(unsure))
                            .col_expr(
                                message::Column::NextDeliveryAt,
                                Expr::value(Option::<chrono::DateTime<Utc>>::None),
                            )
                    }
                }
            }
            Outcome::Refused(e) => {
                tracing::warn!(reply = %reply.id, error = %e, "the platform refused a reply");
                failed_with = Some(e);
                // Refused outright, unless nothing was ever heard back.
                let unsure = e.starts_with(NO_ANSWER);
                q.col_expr(message::Column::DeliveryStatus, Expr::value(FAILED))
                    .col_expr(message::Column::DeliveryUnsure, Expr::value(unsure))
                    .col_expr(message::Column::DeliveryError, Expr::value(e.clone()))
                    .col_expr(
                        message::Column::NextDeliveryAt,
                        Expr::value(Option::<chrono::DateTime<Utc>>::None),
                    )
            }
        };
        let recorded = if let Some(error) = failed_with {
            // The notification is queued with the outcome, in one
            // transaction: both or neither.
            let txn = rapport_store::tenancy::begin_writing(&self.db).await?;
            let recorded = q.exec(&txn).await.context("recording a publish attempt")?;
            if recorded.rows_affected == 1 {
                let payload = serde_json::json!({
                    "type": REPLY_FAILED,
                    "workspaceId": GlobalId::encode(Kind::Workspace, reply.workspace_id),
                    "conversationId": GlobalId::encode(Kind::Conversation, reply.conversation_id),
                    "replyId": GlobalId::encode(Kind::Message, reply.id),
                    "error": error,
                    "attempts": attempts,
                    "failedAt": now.to_rfc3339(),
                });
                outbox::queue_many(
                    &txn,
                    &[outbox::Outgoing {
                        agency_id: reply.agency_id,
                        workspace_id: reply.workspace_id,
                        event_type: REPLY_FAILED,
                        // Per claim: a reply sent again and failing again
                        // is told again.
                        idempotency_key: format!(
                            "{}:{REPLY_FAILED}:{}",
                            reply.id,
                            lease.timestamp_micros()
                        ),
                        payload: &payload,
                    }],
                )
                .await?;
            }
            txn.commit().await?;
            recorded
        } else {
            q.exec(&self.db)
                .await
                .context("recording a publish attempt")?
        };
        if recorded.rows_affected == 0 {
            tracing::warn!(reply = %reply.id, "an attempt outlived its claim; another one's outcome stands");
        } else {
            // Open inboxes show the outcome at once, a reply that could not
            // be sent included (`retryReply` sends it again).
            self.kv
                .conversation_changed(reply.workspace_id, reply.conversation_id, "updated")
                .await;
        }
        Ok(())
    }

    /// Starts an attempt at every due QUEUED reply, as slots free up;
    /// returns how many it started.
    pub async fn sweep(
        self: &Arc<Self>,
        stopping: Option<&watch::Receiver<bool>>,
    ) -> anyhow::Result<usize> {
        let due: Vec<Uuid> = message::Entity::find()
            .select_only()
            .column(message::Column::Id)
            .filter(message::Column::DeliveryStatus.eq(QUEUED))
            .filter(message::Column::NextDeliveryAt.lte(Utc::now()))
            .order_by_asc(message::Column::NextDeliveryAt)
            .limit(self.cfg.batch)
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut started = 0;
        for id in due {
            // A stopping worker finishes the attempts in hand, not the pass.
            if stopping.is_some_and(|s| *s.borrow()) {
                break;
            }
            let slot = self.in_flight.clone().acquire_owned().await?;
            // An attempt that another worker (or the job) claimed since
            // the read finds the row claimed, and makes none.
            self.start(id, slot);
            started += 1;
        }
        Ok(started)
    }

    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.sweep(Some(&shutdown)).await {
                tracing::warn!(error = %e, "reply publishing sweep failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.tick) => {}
                _ = shutdown.changed() => break,
            }
        }
        // Stopping: the attempts under way end and are recorded first.
        let _all = self.in_flight.acquire_many(IN_FLIGHT).await;
    }
}
