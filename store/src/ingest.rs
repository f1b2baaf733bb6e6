//! Turning normalized inbound messages into stored ones: deduplicated per
//! (channel, external id, workspace), authors upserted, threaded into
//! conversations and ranked. Shared by the ingestion job and bulk import;
//! callers run it inside one tenant transaction per unit of work.

use crate::entities::conversation::StoredBreakdown;
use crate::entities::{author, channel, conversation, message, workspace};
use crate::{batch, locks, sla};
use chrono::Utc;
use rapport_domain::ingest::{ChannelKind, Inbound, InboundAuthor, Visibility};
use rapport_domain::priority::{self, Breakdown, PriorityInput};
use rapport_domain::sentiment;
use rapport_domain::sla::Facts;
use sea_orm::sea_query::{Expr, OnConflict, UnionType};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, DbBackend,
    DbErr, EntityTrait, IntoActiveModel, QueryFilter, QuerySelect, QueryTrait, Set,
};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;
use uuid::Uuid;

pub const OPEN: &str = "OPEN";
pub const PENDING_CUSTOMER: &str = "PENDING_CUSTOMER";

/// A stored message's conversation, for live updates after commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Touched {
    pub workspace_id: Uuid,
    pub conversation_id: Uuid,
    pub created: bool,
}

/// After a batch committed: schedules its SLA timers (a cache of the
/// deadlines just stored: if this fails, the periodic rebuild from the
/// database schedules them) and publishes its live updates (best effort).
pub async fn announce(
    kv: &crate::Kv,
    timers: &[(crate::sla::Timer, chrono::DateTime<chrono::Utc>)],
    touched: &[Touched],
) {
    if let Err(e) = crate::sla::schedule(kv, timers).await {
        tracing::warn!(error = %e, "scheduling SLA timers failed; the rebuild will");
    }
    kv.conversations_changed(changes(touched)).await;
}

/// The live updates for what a batch touched: one per conversation
/// (`(workspace, conversation, "created" | "updated")`), "created" when any
/// of its messages opened it, in first-touched order.
pub fn changes(touched: &[Touched]) -> Vec<(Uuid, Uuid, &'static str)> {
    let mut out: Vec<(Uuid, Uuid, &'static str)> = Vec::with_capacity(touched.len());
    let mut at: HashMap<Uuid, usize> = HashMap::with_capacity(touched.len());
    for t in touched {
        let event = if t.created { "created" } else { "updated" };
        match at.get(&t.conversation_id) {
            Some(&i) if t.created => out[i].2 = event,
            Some(_) => {}
            None => {
                at.insert(t.conversation_id, out.len());
                out.push((t.workspace_id, t.conversation_id, event));
            }
        }
    }
    out
}

/// Stores a payload's messages, each `(workspace, message)` pair once:
/// pairs already stored are skipped. A handful of queries per payload, not
/// per message: the authors' locks, one dedup check (which also finds
/// replies that arrived first), one author lookup and insert, one lookup
/// each of parents and open conversations, then
/// multi-row inserts and one update for the changed conversations. Returns
/// what was stored.
pub async fn store_batch(
    txn: &DatabaseTransaction,
    ch: &channel::Model,
    kind: ChannelKind,
    items: &[(&workspace::Model, &Inbound)],
) -> Result<Stored, DbErr> {
    lock(txn, ch, kind, items.iter().map(|(_, m)| *m)).await?;
    store_locked(txn, ch, kind, items).await
}

/// Routes `msgs` of a keyword-routed channel ([`route`]) and stores them,
/// in `txn`: the locks are taken before the workspaces holding them and
/// the messages they answer are read, so a parent being stored by another
/// worker meanwhile is waited for and followed (read before the locks, it
/// was missed and its reply landed in the channel's own workspace).
/// `workspaces`: the channel's [`routable_workspaces`].
pub async fn route_and_store(
    txn: &DatabaseTransaction,
    ch: &channel::Model,
    kind: ChannelKind,
    workspaces: &[workspace::Model],
    msgs: &[&Inbound],
) -> Result<Stored, DbErr> {
    lock(txn, ch, kind, msgs.iter().copied()).await?;
    let (stored, answered) = if kind.routes_by_keywords() {
        let stored = stored_workspaces(txn, ch.id, &lookup_ids(msgs)).await?;
        let answered = early_reply_workspaces(txn, ch.id, &new_ids(msgs, &stored)).await?;
        (stored, answered)
    } else {
        Default::default()
    };
    let items = route(kind, ch, workspaces, msgs, &stored, &answered);
    store_locked(txn, ch, kind, &items).await
}

/// Takes, in `txn`, the locks storing `msgs` of `ch` needs (all at once,
/// in a fixed order, so no two transactions deadlock on them). Callers
/// that must read something only after them (routing) take them first and
/// store with [`store_locked`].
///
/// Concurrent payloads may carry the same authors: one lock per author
/// serialises them before anything is read, so the second sees the
/// first's messages (and stores none of them again), its authors and
/// conversations, and no two deadlock on author rows. The API takes the
/// same lock before it opens a conversation of the author
/// (crate::locks::authors), so none it opens meanwhile goes unseen.
/// With them, one lock per message and per message answered: a reply and
/// its parent in concurrent payloads would otherwise each miss the other
/// (neither committed) and open two conversations. X ids are the
/// platform's, one space for all of the agency's X accounts. SQLite's
/// write transactions are serialised already.
pub async fn lock<'m>(
    txn: &DatabaseTransaction,
    ch: &channel::Model,
    kind: ChannelKind,
    msgs: impl Iterator<Item = &'m Inbound>,
) -> Result<(), DbErr> {
    let id_space = if kind == ChannelKind::X {
        ch.agency_id
    } else {
        ch.id
    };
    let mut keys = Vec::new();
    for m in msgs {
        keys.push(locks::author_key(
            ch.agency_id,
            kind.as_str(),
            &m.author.external_id,
        ));
        // Its former id too: stored under either, it is one message.
        keys.extend(
            std::iter::once(&m.external_id)
                .chain(m.alias.as_ref())
                .chain(m.in_reply_to.as_ref())
                .map(|id| locks::message_key(id_space, id)),
        );
    }
    locks::advisory(txn, keys).await
}

/// [`store_batch`] for a caller holding [`lock`] for these messages.
pub async fn store_locked(
    txn: &DatabaseTransaction,
    ch: &channel::Model,
    kind: ChannelKind,
    items: &[(&workspace::Model, &Inbound)],
) -> Result<Stored, DbErr> {
    // 1. An X id is the platform's, one for all of the agency's X accounts
    //    (a tweet naming two connected accounts is delivered once for
    //    each): stored once per workspace, and a reply delivered for one
    //    account finds its parent stored for the other. Tweets of any of
    //    the agency's own accounts are the brand's, not a customer's. Other
    //    platforms' ids are looked up on the channel.
    let (same_ids, own_accounts): (Vec<Uuid>, HashSet<String>) = if kind == ChannelKind::X {
        let rows: Vec<(Uuid, String)> = channel::Entity::find()
            .select_only()
            .column(channel::Column::Id)
            .column(channel::Column::ExternalAccountId)
            .filter(channel::Column::AgencyId.eq(ch.agency_id))
            .filter(channel::Column::Kind.eq(kind.as_str()))
            .into_tuple()
            .all(txn)
            .await?;
        rows.into_iter().unzip()
    } else {
        (vec![ch.id], HashSet::new())
    };
    let customers: Vec<(&workspace::Model, &Inbound)> = items
        .iter()
        .filter(|(_, m)| !own_accounts.contains(&m.author.external_id))
        .copied()
        .collect();
    let items = customers.as_slice();

    // 2. Deduplicate against the database and within the payload. The same
    //    lookup finds replies stored before the message they answer
    //    (platforms deliver out of order; concurrent chunks of one channel
    //    race): the message joins the oldest such reply's conversation.
    let ext_ids: Vec<&str> = unique(
        items
            .iter()
            .flat_map(|(_, m)| std::iter::once(m.external_id.as_str()).chain(m.alias.as_deref())),
    );
    let mut seen: HashSet<(String, Uuid)> = HashSet::new();
    let mut early: HashMap<(String, Uuid), Uuid> = HashMap::new();
    for chunk in ext_ids.chunks(CHUNK) {
        let wanted: HashSet<&str> = chunk.iter().copied().collect();
        let columns = || {
            message::Entity::find()
                .select_only()
                .column(message::Column::ExternalId)
                .column(message::Column::WorkspaceId)
                .column(message::Column::InReplyToExternalId)
                .column(message::Column::ConversationId)
                .filter(message::Column::ChannelId.is_in(same_ids.iter().copied()))
        };
        // Two branches of one UNION ALL, not one OR: under an OR the
        // correlated NOT EXISTS stays a per-row subplan, and a plan cached
        // while the table was small turned it into minutes per payload.
        let mut q = columns()
            .filter(message::Column::ExternalId.is_in(chunk.iter().copied()))
            .into_query();
        q.union(
            UnionType::All,
            columns()
                .filter(message::Column::InReplyToExternalId.is_in(chunk.iter().copied()))
                // Replies whose parent is stored already are of no use (the
                // parent is a redelivery): left in the database, however
                // many a popular message has.
                .filter(Expr::cust(
                    "NOT EXISTS (SELECT 1 FROM messages AS p \
                     WHERE p.channel_id = messages.channel_id \
                     AND p.external_id = messages.in_reply_to_external_id \
                     AND p.workspace_id = messages.workspace_id)",
                ))
                .into_query(),
        );
        // The brand's own replies, published through this channel, known
        // by the id the platform gave them: a source echoing one back
        // (a review site listing the answer) sends no customer message.
        q.union(
            UnionType::All,
            message::Entity::find()
                .select_only()
                .column(message::Column::PlatformMessageId)
                .column(message::Column::WorkspaceId)
                .column(message::Column::InReplyToExternalId)
                .column(message::Column::ConversationId)
                .filter(message::Column::ChannelId.is_in(same_ids.iter().copied()))
                .filter(message::Column::PlatformMessageId.is_in(chunk.iter().copied()))
                .into_query(),
        );
        let rows = txn
            .query_all_raw(txn.get_database_backend().build(&q))
            .await?
            .iter()
            .map(|r| {
                Ok::<_, DbErr>((
                    r.try_get_by_index::<String>(0)?,
                    r.try_get_by_index::<Uuid>(1)?,
                    r.try_get_by_index::<Option<String>>(2)?,
                    r.try_get_by_index::<Uuid>(3)?,
                ))
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (ext, ws, parent, conv) in rows {
            if let Some(p) = parent.filter(|p| wanted.contains(p.as_str())) {
                let oldest = early.entry((p, ws)).or_insert(conv);
                *oldest = (*oldest).min(conv);
            }
            if wanted.contains(ext.as_str()) {
                seen.insert((ext, ws));
            }
        }
    }
    let todo: Vec<(&workspace::Model, &Inbound)> = items
        .iter()
        .filter(|(ws, m)| {
            // Stored under its former id: stored.
            let as_before = m
                .alias
                .as_ref()
                .is_some_and(|a| seen.contains(&(a.clone(), ws.id)));
            !as_before && seen.insert((m.external_id.clone(), ws.id))
        })
        .copied()
        .collect();
    if todo.is_empty() {
        return Ok(Stored::default());
    }

    // 3. Authors, inserted or refreshed.
    let authors =
        upsert_authors(txn, ch.agency_id, kind, todo.iter().map(|(_, m)| &m.author)).await?;
    let author_of = |m: &Inbound| authors[&m.author.external_id].id;
    let ws_ids: Vec<Uuid> = unique(todo.iter().map(|(ws, _)| ws.id));
    let author_ids: Vec<Uuid> = unique(todo.iter().map(|(_, m)| author_of(m)));

    // 4. Conversations the messages may join: those of the messages they
    //    answer, those of replies that arrived before them, and their
    //    authors' open ones.
    let parents: Vec<&str> = unique(todo.iter().filter_map(|(_, m)| m.in_reply_to.as_deref()));
    let mut parent_conv: HashMap<(String, Uuid), Uuid> = HashMap::new();
    for (id, w, c) in known_as(txn, &same_ids, &parents).await? {
        parent_conv.insert((id, w), c);
    }
    //    Both are locked (crate::locks) before they are read for good: an
    //    agent's reply, a status change or another payload committing
    //    meanwhile is waited for and read, not overwritten by what this
    //    payload computed from the row before it.
    let mut candidates: Vec<Uuid> = unique(parent_conv.values().chain(early.values()).copied());
    // Feed entries stand alone: their "author" is often the feed itself.
    if kind != ChannelKind::Feed {
        for chunk in author_ids.chunks(CHUNK) {
            let ids: Vec<Uuid> = conversation::Entity::find()
                .select_only()
                .column(conversation::Column::Id)
                .filter(conversation::Column::WorkspaceId.is_in(ws_ids.iter().copied()))
                .filter(conversation::Column::AuthorId.is_in(chunk.iter().copied()))
                .filter(conversation::Column::Status.is_in([OPEN, PENDING_CUSTOMER]))
                .into_tuple()
                .all(txn)
                .await?;
            candidates.extend(ids);
        }
    }
    //    A private thread `takeOffline` opened carries its public
    //    conversation's recovery (the customer's "sorted, thanks!" comes
    //    in private): its parent is locked with it, in the same id order.
    //    The link cannot change meanwhile: it is written under the
    //    author's lock, which this payload holds.
    if todo
        .iter()
        .any(|(_, m)| m.visibility == Visibility::Private)
    {
        let mut parents = Vec::new();
        for chunk in candidates.chunks(CHUNK) {
            let ids: Vec<Option<Uuid>> = conversation::Entity::find()
                .select_only()
                .column(conversation::Column::ParentConversationId)
                .filter(conversation::Column::Id.is_in(chunk.iter().copied()))
                .filter(conversation::Column::ParentConversationId.is_not_null())
                .into_tuple()
                .all(txn)
                .await?;
            parents.extend(ids.into_iter().flatten());
        }
        candidates.extend(parents);
    }
    let mut convs: HashMap<Uuid, Conv> = HashMap::new();
    let mut open: HashMap<OpenKey, Uuid> = HashMap::new();
    let authors_here: HashSet<Uuid> = author_ids.iter().copied().collect();
    for c in locks::conversations(txn, candidates).await? {
        // Resolved or closed since the candidates were listed: joined only
        // as a reply's parent. None of these authors' conversations can
        // have been opened meanwhile by the API or by a payload of theirs:
        // those hold the author's lock, as this payload does. One reopened
        // by another author's reply (a payload holding only that author's
        // lock) can be: the message then opens a second conversation.
        let still_open = kind != ChannelKind::Feed
            && [OPEN, PENDING_CUSTOMER].contains(&c.status.as_str())
            && ws_ids.contains(&c.workspace_id)
            && authors_here.contains(&c.author_id);
        if still_open {
            // Normally one is open per key; should there be more (an agent
            // reopened an older one), the oldest is joined, every time:
            // rows come in id order.
            open.entry(OpenKey::of(&c)).or_insert(c.id);
        }
        convs.insert(c.id, Conv::existing(c));
    }

    // 5. Thread each message, in payload order, and rank its conversation;
    //    a new conversation gets its workspace's response-time promise.
    let now = Utc::now();
    let mut slas: HashMap<Uuid, sla::WorkspaceSla> = HashMap::new();
    let mut timers = Vec::new();
    let mut here: HashMap<(String, Uuid), Uuid> = HashMap::new();
    let mut early_here: HashMap<(String, Uuid), Uuid> = HashMap::new();
    let mut new_order = Vec::new();
    let mut recovered_threads: Vec<Uuid> = Vec::new();
    let mut messages = Vec::with_capacity(todo.len());
    let mut touched = Vec::with_capacity(todo.len());
    for (ws, m) in &todo {
        let author_id = author_of(m);
        let score = sentiment::compound(&m.text);
        let breakdown = priority::score(&PriorityInput {
            sentiment: score,
            followers: m.author.followers,
            verified: m.author.verified,
            visibility: m.visibility,
            text: &m.text,
            urgency_keywords: &strings(&ws.urgency_keywords),
        });
        let key = OpenKey::new(ws.id, author_id, m.visibility, ch.id);
        // A thread is public or private throughout: a private message
        // answering a public one (or the reverse, as a GENERIC source may
        // send) goes to the author's conversation of its own visibility.
        let same_visibility = |id: &Uuid| {
            convs
                .get(id)
                .is_none_or(|c| c.model.visibility == m.visibility.as_str())
        };
        let parent = m
            .in_reply_to
            .as_ref()
            .and_then(|p| {
                let k = (p.clone(), ws.id);
                here.get(&k).or_else(|| parent_conv.get(&k)).copied()
            })
            .filter(same_visibility);
        // Answered before it arrived: it joins its replies' thread. In the
        // customer's own conversation it is an earlier message, not their
        // next turn; in another customer's, it is a customer's message the
        // agency has not answered, handled like any other.
        let answered_early = parent
            .is_none()
            .then(|| {
                let k = (m.external_id.clone(), ws.id);
                early.get(&k).or_else(|| early_here.get(&k)).copied()
            })
            .flatten()
            .filter(same_visibility);
        let late = answered_early
            .and_then(|id| convs.get(&id))
            .is_some_and(|c| c.model.author_id == author_id);
        let joined = parent.or(answered_early).or_else(|| {
            (kind != ChannelKind::Feed)
                .then(|| open.get(&key).copied())
                .flatten()
        });
        // A customer answering a conversation that waited on them, or was
        // resolved, opens it again: paused clocks resume, a reopened one
        // restarts its resolution clock.
        let reopening = !late
            && joined
                .and_then(|id| convs.get(&id))
                .is_some_and(|c| c.model.status != OPEN);
        // After an agent reply, a customer message starts the next-response clock.
        let answered = !late
            && joined.and_then(|id| convs.get(&id)).is_some_and(|c| {
                c.model.first_responded_at.is_some() && c.model.next_response_due_at.is_none()
            });
        if (reopening || answered)
            && let std::collections::hash_map::Entry::Vacant(e) = slas.entry(ws.id)
        {
            e.insert(sla::load(txn, ws.id).await?);
        }
        // Its assignee may no longer reach it (see tenancy::may_hold).
        let out_of_reach = match joined.and_then(|id| convs.get(&id)) {
            Some(c) if reopening => match c.model.assignee_membership_id {
                Some(a) => !crate::tenancy::may_hold(txn, a, c.model.workspace_id).await?,
                None => false,
            },
            _ => false,
        };
        let (conversation_id, created) = match joined.and_then(|id| convs.get_mut(&id)) {
            Some(c) => {
                if out_of_reach {
                    c.model.assignee_membership_id = None;
                    c.dirty = true;
                }
                if let Some(snap) = sla::Snapshot::of(&c.model).filter(|_| reopening || answered) {
                    let clock = slas[&ws.id].clock_of(&snap);
                    if reopening {
                        sla::apply_status(&mut c.model, &clock, OPEN, now);
                    }
                    sla::customer_spoke(&mut c.model, &clock, now);
                    c.dirty = true;
                    timers.extend(sla::timers_of(&c.model));
                }
                let was_recovered = c.model.recovered;
                if late {
                    c.join_earlier(m, &breakdown, now);
                } else {
                    c.join(m, score, &breakdown, now, c.model.author_id == author_id);
                }
                if c.model.recovered && !was_recovered {
                    recovered_threads.extend(c.model.parent_conversation_id);
                }
                // Open again: its author's next message in this payload
                // joins it, as it would arriving alone.
                if reopening && kind != ChannelKind::Feed {
                    open.entry(OpenKey::of(&c.model)).or_insert(c.model.id);
                }
                (c.model.id, false)
            }
            None => {
                let mut c = Conv::new(ch, ws.id, author_id, m, score, &breakdown, now)?;
                if let std::collections::hash_map::Entry::Vacant(e) = slas.entry(ws.id) {
                    e.insert(sla::load(txn, ws.id).await?);
                }
                let facts = Facts {
                    channel_kind: kind,
                    visibility: m.visibility,
                    priority: breakdown.level,
                    sentiment: score,
                    author_followers: m.author.followers,
                    text: &m.text,
                };
                // Clocks start when Rapport receives the message.
                if let Some(opened) = slas[&ws.id].open(&facts, now) {
                    c.promise(&opened)?;
                    timers.extend(sla::timers_of(&c.model));
                }
                let id = c.model.id;
                if kind != ChannelKind::Feed {
                    open.insert(key, id);
                }
                convs.insert(id, c);
                new_order.push(id);
                (id, true)
            }
        };
        for p in recovered_threads.drain(..) {
            if let Some(parent) = convs.get_mut(&p)
                && parent
                    .model
                    .opening_sentiment
                    .is_some_and(|s| s <= NEGATIVE)
                && !parent.model.recovered
            {
                parent.model.recovered = true;
                parent.model.updated_at = now;
                parent.dirty = true;
            }
        }
        here.insert((m.external_id.clone(), ws.id), conversation_id);
        if let Some(p) = &m.in_reply_to {
            early_here
                .entry((p.clone(), ws.id))
                .or_insert(conversation_id);
        }
        messages.push(message::ActiveModel {
            id: Set(Uuid::now_v7()),
            agency_id: Set(ch.agency_id),
            workspace_id: Set(ws.id),
            conversation_id: Set(conversation_id),
            channel_id: Set(ch.id),
            author_id: Set(Some(author_id)),
            external_id: Set(m.external_id.clone()),
            in_reply_to_external_id: Set(m.in_reply_to.clone()),
            direction: Set("INBOUND".into()),
            visibility: Set(m.visibility.as_str().into()),
            body: Set(m.text.clone()),
            masked_body: Set(None),
            sentiment: Set(Some(score)),
            published_at: Set(m.published_at),
            received_at: Set(now),
            template_id: Set(None),
            sent_by_membership_id: Set(None),
            delivery_status: Set(None),
            delivery_error: Set(None),
            delivery_unsure: Set(false),
            delivery_attempts: Set(0),
            next_delivery_at: Set(None),
            delivered_at: Set(None),
            platform_message_id: Set(None),
            intent: Set(None),
            created_at: Set(now),
        });
        touched.push(Touched {
            workspace_id: ws.id,
            conversation_id,
            created,
        });
    }

    // 6. Write: new conversations, changed ones, then the messages.
    let mut fresh: Vec<conversation::ActiveModel> = Vec::with_capacity(new_order.len());
    for id in &new_order {
        if let Some(c) = convs.remove(id) {
            fresh.push(c.model.into_active_model().reset_all());
        }
    }
    for chunk in fresh.chunks(CHUNK / 2) {
        conversation::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(txn)
            .await?;
    }
    save_conversations(
        txn,
        convs.into_values().filter(|c| c.dirty).map(|c| c.model),
    )
    .await?;
    for chunk in messages.chunks(CHUNK / 2) {
        message::Entity::insert_many(chunk.to_vec())
            .on_conflict(
                OnConflict::columns([
                    message::Column::ChannelId,
                    message::Column::ExternalId,
                    message::Column::WorkspaceId,
                ])
                .do_nothing()
                .to_owned(),
            )
            .exec_without_returning(txn)
            .await?;
    }
    Ok(Stored { touched, timers })
}

/// What a payload stored: changed conversations (for live updates) and the
/// SLA timers of new ones (to schedule after commit).
#[derive(Debug, Default)]
pub struct Stored {
    pub touched: Vec<Touched>,
    pub timers: Vec<(sla::Timer, chrono::DateTime<Utc>)>,
}

/// Rows per multi-row statement (bind-parameter limits of both backends).
const CHUNK: usize = 500;

fn unique<T: Clone + Eq + std::hash::Hash>(it: impl Iterator<Item = T>) -> Vec<T> {
    let mut seen = HashSet::new();
    it.filter(|x| seen.insert(x.clone())).collect()
}

/// Which open conversation a new message joins: the author's public one in
/// the workspace, or their private one on this channel.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct OpenKey {
    workspace: Uuid,
    author: Uuid,
    private_channel: Option<Uuid>,
}

impl OpenKey {
    fn new(workspace: Uuid, author: Uuid, visibility: Visibility, channel: Uuid) -> Self {
        Self {
            workspace,
            author,
            private_channel: (visibility == Visibility::Private).then_some(channel),
        }
    }

    fn of(c: &conversation::Model) -> Self {
        let vis = if c.visibility == Visibility::Private.as_str() {
            Visibility::Private
        } else {
            Visibility::Public
        };
        Self::new(c.workspace_id, c.author_id, vis, c.channel_id)
    }
}

/// A conversation being changed by this payload.
/// Compound sentiment at or below which a conversation opened unhappy, and
/// at or above which a message is positive (VADER's usual cut-offs).
const NEGATIVE: f64 = -0.05;
const POSITIVE: f64 = 0.05;

struct Conv {
    model: conversation::Model,
    dirty: bool,
}

impl Conv {
    fn existing(model: conversation::Model) -> Self {
        Self {
            model,
            dirty: false,
        }
    }

    fn new(
        ch: &channel::Model,
        workspace_id: Uuid,
        author_id: Uuid,
        m: &Inbound,
        sentiment: f64,
        breakdown: &Breakdown,
        now: chrono::DateTime<Utc>,
    ) -> Result<Self, DbErr> {
        Ok(Self {
            dirty: false,
            model: conversation::Model {
                id: Uuid::now_v7(),
                agency_id: ch.agency_id,
                workspace_id,
                channel_id: ch.id,
                author_id,
                parent_conversation_id: None,
                status: OPEN.into(),
                visibility: m.visibility.as_str().into(),
                priority: breakdown.level.as_str().into(),
                priority_score: breakdown.score,
                priority_breakdown: StoredBreakdown(breakdown.clone()),
                sentiment: Some(sentiment),
                opening_sentiment: Some(sentiment),
                assignee_membership_id: None,
                sla_policy_id: None,
                sla_targets: None,
                first_response_due_at: None,
                next_response_due_at: None,
                resolution_due_at: None,
                due_at: None,
                first_responded_at: None,
                resolved_at: None,
                first_response_business_s: None,
                resolution_business_s: None,
                last_customer_message_at: m.published_at,
                recovered: false,
                created_at: now,
                updated_at: now,
                opened_by_agent: false,
            },
        })
    }

    /// Applies the promise a new conversation gets.
    fn promise(&mut self, o: &sla::Opened) -> Result<(), DbErr> {
        let c = &mut self.model;
        c.sla_policy_id = Some(o.policy_id);
        c.sla_targets = Some(o.snapshot.clone());
        c.first_response_due_at = o.first_response.map(|d| d.due);
        c.resolution_due_at = o.resolution.map(|d| d.due);
        c.due_at = o.due();
        Ok(())
    }

    /// Another customer message in this conversation: rank by its most
    /// urgent message, follow the sentiment of the latest by publish time
    /// (`by_author`: written by the customer whose conversation it is, not
    /// another person answering them), and reopen it (the customer spoke,
    /// the ball is in the agency's court again).
    fn join(
        &mut self,
        m: &Inbound,
        sentiment: f64,
        breakdown: &Breakdown,
        now: chrono::DateTime<Utc>,
        by_author: bool,
    ) {
        // Platforms deliver out of order: an older message than the latest
        // does not speak for the customer's current mood.
        let newest = m.published_at >= self.model.last_customer_message_at;
        self.join_earlier(m, breakdown, now);
        let c = &mut self.model;
        if newest && by_author {
            c.sentiment = Some(sentiment);
            // Recovery: a conversation that began unhappy, now positive.
            if c.opening_sentiment.is_some_and(|s| s <= NEGATIVE) && sentiment >= POSITIVE {
                c.recovered = true;
            }
        }
        if c.status != OPEN {
            c.status = OPEN.into();
            c.resolved_at = None;
            c.resolution_business_s = None;
        }
    }

    /// A customer message that may be older than the conversation's latest:
    /// it can raise the rank, never move the last customer message back.
    /// Alone, for a message whose replies arrived before it: the thread
    /// gains context, not a new turn, so its sentiment, status and clocks
    /// stay as they are.
    fn join_earlier(&mut self, m: &Inbound, breakdown: &Breakdown, now: chrono::DateTime<Utc>) {
        let c = &mut self.model;
        if breakdown.score > c.priority_score {
            c.priority = breakdown.level.as_str().into();
            c.priority_score = breakdown.score;
            c.priority_breakdown = StoredBreakdown(breakdown.clone());
        }
        if m.published_at > c.last_customer_message_at {
            c.last_customer_message_at = m.published_at;
        }
        c.updated_at = now;
        self.dirty = true;
    }
}

/// What ingestion changes in a conversation it joins, for one batched
/// update (`batch::Update`); `save_one` writes the same columns.
const CONVERSATION_CHANGES: &[(&str, &str)] = &[
    ("priority", "text"),
    ("priority_score", "float8"),
    ("priority_breakdown", "jsonb"),
    ("sentiment", "float8"),
    ("recovered", "boolean"),
    ("last_customer_message_at", "timestamptz"),
    ("status", "text"),
    ("resolved_at", "timestamptz"),
    ("resolution_business_s", "bigint"),
    ("next_response_due_at", "timestamptz"),
    ("first_response_due_at", "timestamptz"),
    ("resolution_due_at", "timestamptz"),
    ("due_at", "timestamptz"),
    ("sla_targets", "jsonb"),
    ("assignee_membership_id", "uuid"),
    ("updated_at", "timestamptz"),
];

/// Writes the conversations a payload joined: one statement on PostgreSQL,
/// one per conversation on SQLite (in process: no round trips to save).
async fn save_conversations(
    txn: &DatabaseTransaction,
    changed: impl Iterator<Item = conversation::Model>,
) -> Result<(), DbErr> {
    static UPDATE: LazyLock<batch::Update> =
        LazyLock::new(|| batch::Update::new("conversations", CONVERSATION_CHANGES));
    if txn.get_database_backend() != DbBackend::Postgres {
        for c in changed {
            save_one(txn, c).await?;
        }
        return Ok(());
    }
    let json = |v: Result<Value, serde_json::Error>| v.map_err(|e| DbErr::Json(e.to_string()));
    let mut rows = Vec::new();
    for c in changed {
        let mut r = serde_json::Map::new();
        r.insert("priority".into(), c.priority.into());
        r.insert("priority_score".into(), c.priority_score.into());
        r.insert(
            "priority_breakdown".into(),
            json(serde_json::to_value(&c.priority_breakdown))?,
        );
        r.insert("sentiment".into(), c.sentiment.into());
        r.insert("recovered".into(), c.recovered.into());
        r.insert(
            "last_customer_message_at".into(),
            batch::timestamp(c.last_customer_message_at),
        );
        r.insert("status".into(), c.status.into());
        r.insert("resolved_at".into(), batch::timestamp_opt(c.resolved_at));
        r.insert(
            "resolution_business_s".into(),
            c.resolution_business_s.into(),
        );
        for (k, t) in [
            ("next_response_due_at", c.next_response_due_at),
            ("first_response_due_at", c.first_response_due_at),
            ("resolution_due_at", c.resolution_due_at),
            ("due_at", c.due_at),
        ] {
            r.insert(k.into(), batch::timestamp_opt(t));
        }
        r.insert(
            "sla_targets".into(),
            json(serde_json::to_value(&c.sla_targets))?,
        );
        r.insert(
            "assignee_membership_id".into(),
            c.assignee_membership_id.map(|a| a.to_string()).into(),
        );
        r.insert("updated_at".into(), batch::timestamp(c.updated_at));
        rows.push((c.id, r));
    }
    UPDATE.run(txn, rows).await
}

/// One joined conversation's changes (`CONVERSATION_CHANGES`) by itself.
async fn save_one(txn: &DatabaseTransaction, c: conversation::Model) -> Result<(), DbErr> {
    let mut am = conversation::ActiveModel {
        id: sea_orm::ActiveValue::Unchanged(c.id),
        ..Default::default()
    };
    am.priority = Set(c.priority);
    am.priority_score = Set(c.priority_score);
    am.priority_breakdown = Set(c.priority_breakdown);
    am.sentiment = Set(c.sentiment);
    am.recovered = Set(c.recovered);
    am.last_customer_message_at = Set(c.last_customer_message_at);
    am.status = Set(c.status);
    am.resolved_at = Set(c.resolved_at);
    am.resolution_business_s = Set(c.resolution_business_s);
    am.next_response_due_at = Set(c.next_response_due_at);
    am.first_response_due_at = Set(c.first_response_due_at);
    am.resolution_due_at = Set(c.resolution_due_at);
    am.due_at = Set(c.due_at);
    am.sla_targets = Set(c.sla_targets);
    am.assignee_membership_id = Set(c.assignee_membership_id);
    am.updated_at = Set(c.updated_at);
    am.update(txn).await.map(|_| ())
}

/// Looks authors up by platform id, inserts the new ones (a concurrent
/// insert of the same author is not an error) and refreshes changed ones.
async fn upsert_authors<'a>(
    txn: &DatabaseTransaction,
    agency_id: Uuid,
    kind: ChannelKind,
    incoming: impl Iterator<Item = &'a InboundAuthor>,
) -> Result<HashMap<String, author::Model>, DbErr> {
    // Payloads sharing authors hold their advisory locks (`store_batch`)
    // and run one after the other; other writers (the API) lock one author
    // row at a time. Known authors are refreshed in id order, new ones
    // inserted in platform-id order.
    let mut latest: std::collections::BTreeMap<&str, &InboundAuthor> = Default::default();
    for a in incoming {
        latest.insert(a.external_id.as_str(), a);
    }
    let ids: Vec<&str> = latest.keys().copied().collect();
    let mut found: HashMap<String, author::Model> = HashMap::new();
    for chunk in ids.chunks(CHUNK) {
        for a in author::Entity::find()
            .filter(author::Column::AgencyId.eq(agency_id))
            .filter(author::Column::Platform.eq(kind.as_str()))
            .filter(author::Column::ExternalId.is_in(chunk.iter().copied()))
            .all(txn)
            .await?
        {
            found.insert(a.external_id.clone(), a);
        }
    }
    let now = Utc::now();
    let followers = |a: &InboundAuthor| i64::try_from(a.followers).unwrap_or(i64::MAX);
    let mut missing = Vec::new();
    let mut refreshed: Vec<author::Model> = Vec::new();
    for (id, a) in &latest {
        match found.get(*id) {
            None => missing.push(author::ActiveModel {
                id: Set(Uuid::now_v7()),
                agency_id: Set(agency_id),
                platform: Set(kind.as_str().into()),
                external_id: Set(a.external_id.clone()),
                handle: Set(a.handle.clone()),
                display_name: Set(a.name.clone()),
                follower_count: Set(followers(a)),
                verified: Set(a.verified),
                created_at: Set(now),
                updated_at: Set(now),
            }),
            Some(existing) => {
                let changed = existing.handle != a.handle
                    || (a.name.is_some() && existing.display_name != a.name)
                    // Platforms without counts send 0: keep what we knew.
                    || (followers(a) > 0 && existing.follower_count != followers(a))
                    || existing.verified != a.verified;
                if changed {
                    let mut new = existing.clone();
                    new.handle = a.handle.clone();
                    if a.name.is_some() {
                        new.display_name = a.name.clone();
                    }
                    if followers(a) > 0 {
                        new.follower_count = followers(a);
                    }
                    new.verified = a.verified;
                    new.updated_at = now;
                    refreshed.push(new);
                }
            }
        }
    }
    refresh_authors(txn, &refreshed).await?;
    found.extend(refreshed.into_iter().map(|a| (a.external_id.clone(), a)));
    for chunk in missing.chunks(CHUNK / 2) {
        for a in author::Entity::insert_many(chunk.to_vec())
            .on_conflict(
                OnConflict::columns([
                    author::Column::AgencyId,
                    author::Column::Platform,
                    author::Column::ExternalId,
                ])
                .update_column(author::Column::UpdatedAt)
                .to_owned(),
            )
            .exec_with_returning(txn)
            .await?
        {
            found.insert(a.external_id.clone(), a);
        }
    }
    Ok(found)
}

/// Writes authors' refreshed profiles: one statement on PostgreSQL (rows
/// locked in id order), one per author elsewhere.
async fn refresh_authors(
    txn: &DatabaseTransaction,
    refreshed: &[author::Model],
) -> Result<(), DbErr> {
    static UPDATE: LazyLock<batch::Update> = LazyLock::new(|| {
        batch::Update::new(
            "authors",
            &[
                ("handle", "text"),
                ("display_name", "text"),
                ("follower_count", "bigint"),
                ("verified", "boolean"),
                ("updated_at", "timestamptz"),
            ],
        )
    });
    if txn.get_database_backend() != DbBackend::Postgres {
        for a in refreshed {
            a.clone()
                .into_active_model()
                .reset_all()
                .update(txn)
                .await?;
        }
        return Ok(());
    }
    let rows = refreshed
        .iter()
        .map(|a| {
            let mut r = serde_json::Map::new();
            r.insert("handle".into(), a.handle.clone().into());
            r.insert("display_name".into(), a.display_name.clone().into());
            r.insert("follower_count".into(), a.follower_count.into());
            r.insert("verified".into(), a.verified.into());
            r.insert("updated_at".into(), batch::timestamp(a.updated_at));
            (a.id, r)
        })
        .collect();
    UPDATE.run(txn, rows).await
}

/// The workspaces a message of channel `ch` may land in: the channel's own
/// (even archived: nothing is dropped) and, for keyword-routed sources,
/// every active one of the agency.
pub async fn routable_workspaces<C: ConnectionTrait>(
    conn: &C,
    ch: &channel::Model,
    kind: ChannelKind,
) -> Result<Vec<workspace::Model>, DbErr> {
    let own = workspace::Column::Id.eq(ch.workspace_id);
    workspace::Entity::find()
        .filter(workspace::Column::AgencyId.eq(ch.agency_id))
        .filter(if kind.routes_by_keywords() {
            Condition::any()
                .add(own)
                .add(workspace::Column::ArchivedAt.is_null())
        } else {
            Condition::all().add(own)
        })
        .all(conn)
        .await
}

/// Where each message lands: its channel's workspace, or for
/// keyword-routed sources (FEED, GENERIC) every workspace whose brand
/// keywords it mentions, together with those of the message it answers (a
/// reply naming no brand follows its thread) and of replies to it stored
/// before it (platforms deliver out of order: the thread is whole where
/// the reply went), or the channel's own when there are none, so nothing
/// is lost. A message already stored (`stored`: ids on this channel and
/// the workspaces holding them), or routed earlier in this call, stays
/// where it was first put: a feed read again after a brand's keywords
/// changed, or an edited event sent again, is not stored a second time
/// elsewhere. `answered`: ids of messages not stored yet and the
/// workspaces holding replies to them ([`early_reply_workspaces`]).
pub fn route<'a, 'm>(
    kind: ChannelKind,
    ch: &channel::Model,
    workspaces: &'a [workspace::Model],
    msgs: &[&'m Inbound],
    stored: &HashMap<String, Vec<Uuid>>,
    answered: &HashMap<String, Vec<Uuid>>,
) -> Vec<(&'a workspace::Model, &'m Inbound)> {
    let by_id = |ids: &[Uuid]| -> Vec<&'a workspace::Model> {
        workspaces.iter().filter(|w| ids.contains(&w.id)).collect()
    };
    let own = by_id(&[ch.workspace_id]);
    if !kind.routes_by_keywords() {
        return msgs
            .iter()
            .flat_map(|m| own.iter().map(move |w| (*w, *m)))
            .collect();
    }
    // Where this call put each message, and replies to each message.
    let mut routed: HashMap<&str, Vec<Uuid>> = HashMap::new();
    let mut replies: HashMap<&str, Vec<Uuid>> = HashMap::new();
    let mut out = Vec::with_capacity(msgs.len());
    for m in msgs {
        let put = |id: &str| stored.get(id).or_else(|| routed.get(id));
        let first_put = put(&m.external_id).or_else(|| m.alias.as_deref().and_then(put));
        let chosen: Vec<Uuid> = match first_put {
            Some(first) => first.clone(),
            None => {
                let lower = m.text.to_lowercase();
                let mut ids: Vec<Uuid> = workspaces
                    .iter()
                    .filter(|w| {
                        strings(&w.brand_keywords)
                            .iter()
                            .any(|k| mentions(&lower, &k.to_lowercase()))
                    })
                    .map(|w| w.id)
                    .collect();
                let parent = m.in_reply_to.as_deref().and_then(put);
                let early = [
                    answered.get(&m.external_id),
                    replies.get(m.external_id.as_str()),
                ];
                // Only where it may still land (not an archived
                // workspace): else the fallback below.
                for w in parent
                    .into_iter()
                    .chain(early.into_iter().flatten())
                    .flatten()
                {
                    if !ids.contains(w) && workspaces.iter().any(|x| x.id == *w) {
                        ids.push(*w);
                    }
                }
                if ids.is_empty() {
                    vec![ch.workspace_id]
                } else {
                    ids
                }
            }
        };
        out.extend(by_id(&chosen).into_iter().map(|w| (w, *m)));
        if let Some(p) = m.in_reply_to.as_deref() {
            let to = replies.entry(p).or_default();
            let new: Vec<Uuid> = chosen.iter().filter(|w| !to.contains(w)).copied().collect();
            to.extend(new);
        }
        routed.entry(m.external_id.as_str()).or_insert(chosen);
    }
    out
}

/// The ids of `msgs` not stored yet (under them or their former ids): the
/// only ones whose early replies routing reads.
pub fn new_ids<'m>(msgs: &[&'m Inbound], stored: &HashMap<String, Vec<Uuid>>) -> Vec<&'m str> {
    msgs.iter()
        .filter(|m| {
            !stored.contains_key(&m.external_id)
                && !m.alias.as_ref().is_some_and(|a| stored.contains_key(a))
        })
        .map(|m| m.external_id.as_str())
        .collect()
}

/// For each of `ids` no message on channel `channel_id` is known by, the
/// workspaces holding replies to it (stored before it: out of order).
/// Replies to a message stored already are not read (however many a
/// popular message has): it is routed as stored.
pub async fn early_reply_workspaces<C: ConnectionTrait>(
    conn: &C,
    channel_id: Uuid,
    ids: &[&str],
) -> Result<HashMap<String, Vec<Uuid>>, DbErr> {
    let mut out: HashMap<String, Vec<Uuid>> = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    for chunk in unique(ids.iter().copied()).chunks(CHUNK) {
        let rows: Vec<(Option<String>, Uuid)> = message::Entity::find()
            .select_only()
            .column(message::Column::InReplyToExternalId)
            .column(message::Column::WorkspaceId)
            .distinct()
            .filter(message::Column::ChannelId.eq(channel_id))
            .filter(message::Column::InReplyToExternalId.is_in(chunk.iter().copied()))
            .filter(Expr::cust(
                "NOT EXISTS (SELECT 1 FROM messages AS p \
                 WHERE p.channel_id = messages.channel_id \
                 AND p.external_id = messages.in_reply_to_external_id)",
            ))
            .into_tuple()
            .all(conn)
            .await?;
        for (parent, ws) in rows {
            add_workspace(&mut out, parent.unwrap_or_default(), ws);
        }
    }
    Ok(out)
}

/// The ids to look `msgs` up by before routing them: their own, the ones
/// they were stored under before, and those of the messages they answer.
pub fn lookup_ids<'m>(msgs: &[&'m Inbound]) -> Vec<&'m str> {
    msgs.iter()
        .flat_map(|m| {
            std::iter::once(m.external_id.as_str())
                .chain(m.alias.as_deref())
                .chain(m.in_reply_to.as_deref())
        })
        .collect()
}

/// Notes that workspace `ws` holds something known by `id`, once.
fn add_workspace(out: &mut HashMap<String, Vec<Uuid>>, id: String, ws: Uuid) {
    let list = out.entry(id).or_default();
    if !list.contains(&ws) {
        list.push(ws);
    }
}

/// The workspaces holding each of `ids` on channel `channel_id`, by
/// external id or, for the brand's own published replies, by the id the
/// platform gave them (a customer may answer one).
pub async fn stored_workspaces<C: ConnectionTrait>(
    conn: &C,
    channel_id: Uuid,
    ids: &[&str],
) -> Result<HashMap<String, Vec<Uuid>>, DbErr> {
    let mut out: HashMap<String, Vec<Uuid>> = HashMap::new();
    for (id, ws, _) in known_as(conn, &[channel_id], ids).await? {
        add_workspace(&mut out, id, ws);
    }
    Ok(out)
}

/// Messages on `channels` known by one of `ids`: by their external id or,
/// for the brand's own published replies (stored as `rapport:<id>`), by
/// the id publishing recorded (`platform_message_id`, indexed per
/// channel), since a customer may answer one. One (id it is known by,
/// workspace, conversation) per name.
///
/// The two names are two branches of one UNION ALL, each on its own index,
/// not one OR: no single index serves an OR of two columns, and a plan
/// cached while the table was young read every message of the channel to
/// test it (300–530 ms a payload in the benchmark's warm-up).
async fn known_as<C: ConnectionTrait>(
    conn: &C,
    channels: &[Uuid],
    ids: &[&str],
) -> Result<Vec<(String, Uuid, Uuid)>, DbErr> {
    let mut out = Vec::new();
    for chunk in unique(ids.iter().copied()).chunks(CHUNK) {
        let by = |name: message::Column| {
            message::Entity::find()
                .select_only()
                .column(name)
                .column(message::Column::WorkspaceId)
                .column(message::Column::ConversationId)
                .filter(message::Column::ChannelId.is_in(channels.iter().copied()))
                .filter(name.is_in(chunk.iter().copied()))
                .into_query()
        };
        let mut q = by(message::Column::ExternalId);
        q.union(UnionType::All, by(message::Column::PlatformMessageId));
        for r in conn
            .query_all_raw(conn.get_database_backend().build(&q))
            .await?
        {
            out.push((
                r.try_get_by_index::<String>(0)?,
                r.try_get_by_index::<Uuid>(1)?,
                r.try_get_by_index::<Uuid>(2)?,
            ));
        }
    }
    Ok(out)
}

/// Whole-word containment: "brew" matches "Brew Co" and "#brew" but not
/// "brewery". In scripts written without spaces (Chinese, Japanese, Thai…)
/// there are no word edges to find: a keyword in them matches anywhere.
pub fn mentions(text: &str, keyword: &str) -> bool {
    use rapport_domain::priority::unspaced;
    if keyword.is_empty() {
        return false;
    }
    let joins = |c: char| c.is_alphanumeric() && !unspaced(c);
    let open_start = keyword.chars().next().is_some_and(unspaced);
    let open_end = keyword.chars().next_back().is_some_and(unspaced);
    text.match_indices(keyword).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + keyword.len()..].chars().next();
        (open_start || !before.is_some_and(joins)) && (open_end || !after.is_some_and(joins))
    })
}

fn strings(v: &Value) -> Vec<String> {
    serde_json::from_value(v.clone()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::{Touched, changes, mentions};
    use uuid::Uuid;

    #[test]
    fn keywords_match_whole_words() {
        assert!(mentions("love brew co!", "brew co"));
        assert!(mentions("#brew is great", "brew"));
        assert!(!mentions("the brewery is great", "brew"));
        assert!(mentions("café déçu", "café"));
        assert!(!mentions("anything", ""));
        // No spaces between words: matched anywhere, and next to them.
        assert!(mentions("我爱星巴克咖啡", "星巴克"));
        assert!(mentions("ชอบกาแฟสตาร์บัคส์มาก", "สตาร์บัคส์"));
        assert!(mentions("我爱brew咖啡", "brew"));
        assert!(!mentions("我爱brewery", "brew"));
    }

    #[test]
    fn one_change_per_conversation_created_wins_first_order_kept() {
        let (w, a, b) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let t = |c, created| Touched {
            workspace_id: w,
            conversation_id: c,
            created,
        };
        let got = changes(&[t(a, false), t(b, true), t(a, true), t(b, false)]);
        assert_eq!(got, [(w, a, "created"), (w, b, "created")]);
        assert_eq!(changes(&[t(b, false), t(b, false)]), [(w, b, "updated")]);
        assert!(changes(&[]).is_empty());
    }
}
