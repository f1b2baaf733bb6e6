//! The ingestion job: a raw event becomes deduplicated messages from
//! upserted authors, threaded into conversations and ranked. A raw event's
//! effects commit in one transaction together with marking it processed
//! (events of one channel read together share that transaction; past
//! [`PART`] messages the earlier ones commit in parts before it), so a
//! crash at any point means a clean retry: at-least-once delivery,
//! exactly-once effect.

use crate::registry::Permanent;
use anyhow::Context;
use chrono::Utc;
use rapport_domain::crypto::SecretBox;
use rapport_domain::ingest::{self, ChannelKind, Inbound, signature};
use rapport_store::Kv;
use rapport_store::entities::{channel, raw_event, workspace};
use rapport_store::ingest::{announce, routable_workspaces, route_and_store, store_batch};
use rapport_store::raw_events::{FAILED, PROCESSED};
use rapport_store::tenancy::begin_rederivable_for_agency;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// Messages stored in one transaction, at most: up to four advisory locks
/// each (author, message, its former id, parent).
pub const PART: usize = 250;

/// Advisory locks one worker process holds at once, at most (two full
/// parts): PostgreSQL's lock table is shared by every connection and sized
/// for 64 locks per connection (6,400 by default), and a worker storing
/// eight big batches at once would otherwise take most of it, failing
/// everyone's transactions with "out of shared memory".
const LOCK_BUDGET: usize = 2 * PART * 4;
static LOCKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(LOCK_BUDGET);

/// Waits until this process may take the locks of storing `messages`
/// messages; held until their transaction ends.
async fn lock_room(messages: usize) -> anyhow::Result<tokio::sync::SemaphorePermit<'static>> {
    let wanted = (messages * 4).clamp(1, LOCK_BUDGET) as u32;
    Ok(LOCKS.acquire_many(wanted).await?)
}

#[derive(Clone)]
pub struct Ingestor {
    pub db: DatabaseConnection,
    pub kv: Kv,
    /// Opens channel secrets: another account's entries go to its channel
    /// only when both channels share the secret that signed them.
    pub secrets: Arc<SecretBox>,
}

fn raw_id(payload: &Value) -> anyhow::Result<Uuid> {
    payload
        .get("raw_event_id")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| Permanent("job has no raw_event_id".into()).into())
}

/// Whether the platform delivered `m` for another account than `ch`'s.
fn foreign(ch: &channel::Model, m: &Inbound) -> bool {
    m.account
        .as_deref()
        .is_some_and(|a| a != ch.external_account_id)
}

/// One channel's pending events, in stream order.
type Group = (channel::Model, ChannelKind, Vec<Parsed>);

/// A parsed raw event waiting to be stored.
struct Parsed {
    /// Its place among the payloads handed over.
    at: usize,
    raw_id: Uuid,
    inbound: Vec<Inbound>,
    /// Received while its channel was paused, for its siblings (see the
    /// webhook receiver): its own account's entries are not taken in.
    paused: bool,
    /// Kept when it holds entries for other accounts than its channel's.
    signed: Option<Signed>,
}

/// A raw event's body and signature header as received. Entries for
/// another account go only to channels whose own secret signed it: checked
/// again here with each one's secret, not compared with the receiving
/// channel's secret of the moment, which may have changed (or been wiped
/// by a disconnect) while the event waited.
struct Signed {
    body: Vec<u8>,
    header: Option<String>,
}

impl Signed {
    fn of(kind: ChannelKind, raw: &raw_event::Model) -> Self {
        let name = if kind == ChannelKind::X {
            signature::X_HEADER
        } else {
            signature::META_HEADER
        };
        Self {
            body: raw.body.clone(),
            header: raw
                .headers
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_string),
        }
    }

    /// Whether `secret` made this signature (only X and Meta deliveries
    /// name other accounts).
    fn by(&self, kind: ChannelKind, secret: &[u8]) -> bool {
        let header = self.header.as_deref();
        match kind {
            ChannelKind::X => signature::verify_x(secret, &self.body, header).is_ok(),
            ChannelKind::Facebook | ChannelKind::Instagram => {
                signature::verify_meta(secret, &self.body, header).is_ok()
            }
            ChannelKind::Generic | ChannelKind::Feed => false,
        }
    }
}

impl Ingestor {
    /// Raw events read together from the stream: each channel's events are
    /// stored in one transaction (a dozen statements for all of them
    /// instead of a dozen each). If that transaction fails, each of its
    /// events is tried alone, so one bad event fails only itself. One
    /// result per payload, in order.
    pub async fn handle_many(&self, payloads: Vec<Value>) -> Vec<anyhow::Result<()>> {
        let mut results: Vec<anyhow::Result<()>> = payloads.iter().map(|_| Ok(())).collect();
        let groups = match self.parse_all(&payloads, &mut results).await {
            Ok(groups) => groups,
            // The database is unreachable, say: every job is retried.
            Err(e) => {
                return payloads
                    .iter()
                    .map(|_| Err(anyhow::anyhow!("{e:#}")))
                    .collect();
            }
        };
        for (ch, kind, events) in groups {
            if events.len() > 1 {
                match self.store(&ch, kind, &events).await {
                    Ok(true) => continue,
                    Ok(false) => {} // another worker took some of them
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), events = events.len(), "storing raw events together failed; trying them one by one");
                    }
                }
            }
            for event in &events {
                results[event.at] = self
                    .store(&ch, kind, std::slice::from_ref(event))
                    .await
                    .map(|_| ());
            }
        }
        results
    }

    /// Reads the raw events and their channels (one query each) and parses
    /// every pending event; the others get their result here. Returns the
    /// pending events by channel, in stream order.
    async fn parse_all(
        &self,
        payloads: &[Value],
        results: &mut [anyhow::Result<()>],
    ) -> anyhow::Result<Vec<Group>> {
        let ids: Vec<Option<Uuid>> = payloads.iter().map(|p| raw_id(p).ok()).collect();
        let raws: HashMap<Uuid, raw_event::Model> = raw_event::Entity::find()
            .filter(raw_event::Column::Id.is_in(ids.iter().flatten().copied()))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
        let channels: HashMap<Uuid, channel::Model> = channel::Entity::find()
            .filter(channel::Column::Id.is_in(raws.values().map(|r| r.channel_id)))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|c| (c.id, c))
            .collect();
        let mut groups: Vec<Group> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (at, id) in ids.into_iter().enumerate() {
            if id.is_some_and(|id| !seen.insert(id)) {
                continue; // the same event twice in one read (re-enqueued): once is enough
            }
            let found = id
                .ok_or_else(|| Permanent("job has no raw_event_id".into()))
                .and_then(|id| {
                    raws.get(&id)
                        .ok_or_else(|| Permanent(format!("raw event {id} does not exist")))
                });
            let raw = match found {
                Ok(raw) => raw,
                Err(e) => {
                    results[at] = Err(e.into());
                    continue;
                }
            };
            if raw.status != rapport_store::raw_events::PENDING {
                continue; // processed (or dead) already: a redelivery
            }
            let Some(ch) = channels.get(&raw.channel_id) else {
                results[at] = Err(Permanent("channel of the raw event is gone".into()).into());
                continue;
            };
            let kind = match ChannelKind::parse(&ch.kind) {
                Ok(kind) => kind,
                Err(e) => {
                    results[at] = Err(Permanent(e.to_string()).into());
                    continue;
                }
            };
            // A parser that panics on some payload (feed-rs, say) must make
            // that payload a dead letter, not take the worker down on every
            // retry of it.
            let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                ingest::parse(kind, &raw.body, &ch.external_account_id, raw.created_at)
            }))
            .unwrap_or_else(|_| {
                Err(ingest::PayloadError::new(
                    "the payload could not be read (its parser failed)",
                ))
            });
            match parsed {
                Ok(inbound) => {
                    let signed = inbound
                        .iter()
                        .any(|m| foreign(ch, m))
                        .then(|| Signed::of(kind, raw));
                    let parsed = Parsed {
                        at,
                        raw_id: raw.id,
                        inbound,
                        paused: rapport_store::raw_events::received_paused(raw),
                        signed,
                    };
                    match groups.iter_mut().find(|(c, ..)| c.id == ch.id) {
                        Some((_, _, events)) => events.push(parsed),
                        None => groups.push((ch.clone(), kind, vec![parsed])),
                    }
                }
                Err(e) => {
                    // Retrying cannot fix a payload: it is a dead letter now.
                    results[at] = self.mark_failed(raw.id, &e.to_string()).await;
                    metrics::counter!("rapport_ingest_unparseable_total").increment(1);
                }
            }
        }
        Ok(groups)
    }

    /// Stores one channel's parsed events and marks them processed, in one
    /// transaction. `Ok(false)`: another worker processed one of them
    /// first (nothing was written).
    async fn store(
        &self,
        ch: &channel::Model,
        kind: ChannelKind,
        events: &[Parsed],
    ) -> anyhow::Result<bool> {
        for e in events {
            let others: Vec<&Inbound> = e.inbound.iter().filter(|m| foreign(ch, m)).collect();
            if let Some(signed) = e.signed.as_ref().filter(|_| !others.is_empty()) {
                self.store_foreign(ch, kind, &others, signed).await?;
            }
        }
        let workspaces = routable_workspaces(&self.db, ch, kind).await?;
        // A paused channel's URL is still called for its siblings' entries
        // (see the webhook receiver); its own, received while it was
        // paused, are not taken in. (Whatever it accepted while active is,
        // however late the worker gets to it.)
        let dropped: usize = events
            .iter()
            .filter(|e| e.paused)
            .map(|e| e.inbound.iter().filter(|m| !foreign(ch, m)).count())
            .sum();
        if dropped > 0 {
            tracing::info!(channel = %ch.id, messages = dropped, "a paused channel's own messages not taken in");
            metrics::counter!("rapport_ingest_paused_dropped_total").increment(dropped as u64);
        }
        let own: Vec<&Inbound> = events
            .iter()
            .filter(|e| !e.paused)
            .flat_map(|e| &e.inbound)
            .filter(|m| !foreign(ch, m))
            .collect();
        // A big batch (a GENERIC body holds up to 1,000 events, and events
        // are read 16 at a time) is stored in parts, each in its own
        // transaction: every part takes an advisory lock per author and
        // message, and PostgreSQL's lock table is shared and small (64 per
        // connection by default), so one transaction for all of them could
        // run it out for everyone (and parts wait for room in this
        // process's budget, `LOCK_BUDGET`). Parts committed before a crash are
        // deduplicated on the retry; the last part commits with the mark.
        // Each part is routed in its transaction, after its locks (keyword-
        // routed messages go where they, or the messages they answer, were
        // stored already), so a message's copies (one per workspace it
        // lands in) are stored together.
        let mut parts = own.chunks(PART);
        let last = parts.next_back().unwrap_or_default();
        for part in parts {
            let room = lock_room(part.len()).await?;
            let txn = begin_rederivable_for_agency(&self.db, ch.agency_id).await?;
            let stored = route_and_store(&txn, ch, kind, &workspaces, part).await?;
            txn.commit()
                .await
                .context("committing part of the ingested events")?;
            drop(room);
            self.stored(&stored).await;
        }
        // Only now: SQLite lets one transaction write at a time.
        let room = lock_room(last.len()).await?;
        let txn = begin_rederivable_for_agency(&self.db, ch.agency_id).await?;
        let stored = route_and_store(&txn, ch, kind, &workspaces, last).await?;
        // Conditional: of two workers racing on one event, one commits.
        let done = raw_event::Entity::update_many()
            .col_expr(raw_event::Column::Status, Expr::value(PROCESSED))
            .col_expr(raw_event::Column::ProcessedAt, Expr::value(Utc::now()))
            .filter(raw_event::Column::Id.is_in(events.iter().map(|e| e.raw_id)))
            .filter(raw_event::Column::Status.eq(rapport_store::raw_events::PENDING))
            .exec(&txn)
            .await?;
        if done.rows_affected != events.len() as u64 {
            return Ok(false); // dropped: rolls back
        }
        txn.commit().await.context("committing ingested events")?;
        drop(room);
        self.stored(&stored).await;
        Ok(true)
    }

    /// Stores `items` of `ch` in a transaction of their own (a part of a
    /// big batch; another account's messages).
    async fn store_part(
        &self,
        ch: &channel::Model,
        kind: ChannelKind,
        items: &[(&workspace::Model, &Inbound)],
    ) -> anyhow::Result<()> {
        let room = lock_room(items.len()).await?;
        let txn = begin_rederivable_for_agency(&self.db, ch.agency_id).await?;
        let stored = store_batch(&txn, ch, kind, items).await?;
        txn.commit()
            .await
            .context("committing part of the ingested events")?;
        drop(room);
        self.stored(&stored).await;
        Ok(())
    }

    /// After a commit: counted, timers scheduled, live views told.
    async fn stored(&self, stored: &rapport_store::ingest::Stored) {
        metrics::counter!("rapport_messages_ingested_total").increment(stored.touched.len() as u64);
        announce(&self.kv, &stored.timers, &stored.touched).await;
    }

    /// Messages the platform delivered for another account than the
    /// channel's: one Meta app or X environment serves several pages or
    /// users through one callback URL, signed with one secret. Each goes to
    /// the agency's active channels of that account and kind whose secret
    /// signed `signed` (each in its own transaction, committed before the
    /// raw event is marked processed: a retry stores nothing twice, as with
    /// any redelivery); with none it is dropped, logged and counted, never
    /// stored in this channel's workspace.
    async fn store_foreign(
        &self,
        ch: &channel::Model,
        kind: ChannelKind,
        msgs: &[&Inbound],
        signed: &Signed,
    ) -> anyhow::Result<()> {
        let mut by_account: HashMap<&str, Vec<&Inbound>> = HashMap::new();
        for m in msgs {
            if let Some(a) = m.account.as_deref() {
                by_account.entry(a).or_default().push(m);
            }
        }
        let siblings = channel::Entity::find()
            .filter(channel::Column::AgencyId.eq(ch.agency_id))
            .filter(channel::Column::Kind.eq(&ch.kind))
            .filter(channel::Column::Status.eq("ACTIVE"))
            .filter(channel::Column::ExternalAccountId.is_in(by_account.keys().copied()))
            .all(&self.db)
            .await?;
        // Only a channel whose own secret signed the delivery: a signature
        // made with another secret vouches for nothing of it (a client
        // holding its own page's app secret must not file messages into
        // another client's workspace).
        for (account, msgs) in &by_account {
            let mut delivered = false;
            for sib in siblings
                .iter()
                .filter(|c| c.external_account_id == *account)
            {
                let theirs =
                    rapport_store::secrets::opened(&self.secrets, sib.secret_ciphertext.as_deref());
                if !theirs.is_some_and(|s| signed.by(kind, &s)) {
                    tracing::warn!(channel = %ch.id, sibling = %sib.id, account, "another account's messages not routed to its channel: not signed with its secret");
                    continue;
                }
                let Some(ws) = workspace::Entity::find_by_id(sib.workspace_id)
                    .one(&self.db)
                    .await?
                else {
                    continue;
                };
                delivered = true;
                // In parts, as in `store`.
                for part in msgs.chunks(PART) {
                    let items: Vec<_> = part.iter().map(|m| (&ws, *m)).collect();
                    self.store_part(sib, kind, &items).await?;
                }
            }
            if !delivered {
                tracing::warn!(channel = %ch.id, account, messages = msgs.len(), "messages for an account with no active channel of the agency under this secret dropped");
                metrics::counter!("rapport_ingest_foreign_dropped_total")
                    .increment(msgs.len() as u64);
            }
        }
        Ok(())
    }

    /// Marks a raw event as a dead letter the agency can see and retry.
    pub async fn mark_failed(&self, id: Uuid, error: &str) -> anyhow::Result<()> {
        raw_event::Entity::update_many()
            .col_expr(raw_event::Column::Status, Expr::value(FAILED))
            .col_expr(
                raw_event::Column::Error,
                Expr::value(error.chars().take(2000).collect::<String>()),
            )
            .filter(raw_event::Column::Id.eq(id))
            .filter(raw_event::Column::Status.ne(PROCESSED))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Called when the consumer gives up on an ingest job.
    pub async fn dead(&self, payload: Value, error: String) -> anyhow::Result<()> {
        match raw_id(&payload) {
            Ok(id) => self.mark_failed(id, &error).await,
            Err(_) => Ok(()),
        }
    }
}
