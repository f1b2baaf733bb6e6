//! Report rollups, kept by the database itself so that every writer (the
//! worker, the API, imports, the seeder, plain SQL) keeps them right:
//!
//! - `report_message_slots`: messages per 15-minute slot (UTC epoch seconds,
//!   a multiple of 900), direction, channel, sentiment class and sending
//!   member, with the platform delay's sum and maximum in milliseconds.
//!   15 minutes divide every time zone's hour and day boundaries in use.
//! - `report_sla_slots`: SLA events per slot, target and kind.
//!
//! Triggers add every inserted row (messages and SLA events are never
//! updated in these columns; rows go only with their workspace, and the
//! slots with it). On PostgreSQL one statement-level trigger adds a whole
//! batch at once (keys locked in order, so concurrent batches never
//! deadlock); SQLite adds row by row.
//!
//! Conversations keep their business-time response figures
//! (`first_response_business_s`, `resolution_business_s`), written with
//! the timestamps they derive from; rows older than this migration get them
//! here when their policy counts around the clock, the others are computed
//! by the report when it meets them.

use crate::later::{fk, n, protect};
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261128_000006_report_rollups"
    }
}

/// Tenant tables this migration adds.
pub const TABLES: &[&str] = &["report_message_slots", "report_sla_slots"];

/// Must match the store's `unstamped` query word for word (partial index).
const UNSTAMPED: &str = "(first_responded_at IS NOT NULL AND first_response_business_s IS NULL) \
     OR (resolved_at IS NOT NULL AND resolution_business_s IS NULL)";

const MESSAGE_KEY: &str = "workspace_id, slot, direction, channel_id, sentiment, member_id";
const SLA_KEY: &str = "workspace_id, slot, target, kind";

/// The columns of message row `r` the rollup counts.
fn counted(r: &str) -> String {
    format!(
        "{r}.workspace_id, {r}.direction, {r}.channel_id, {r}.sentiment, {r}.published_at, \
         {r}.received_at, {r}.sent_by_membership_id"
    )
}

/// The sentiment class of an inbound message row `r` ('' for outbound).
fn sentiment(r: &str) -> String {
    format!(
        "CASE WHEN {r}.direction <> 'INBOUND' THEN '' \
         WHEN {r}.sentiment >= 0.05 THEN 'POSITIVE' \
         WHEN {r}.sentiment <= -0.05 THEN 'NEGATIVE' ELSE 'NEUTRAL' END"
    )
}

fn pg_slot(col: &str) -> String {
    format!("CAST(floor(EXTRACT(EPOCH FROM {col}) / 900) * 900 AS BIGINT)")
}

/// Takes the transaction-scoped advisory lock of every `(workspace_id,
/// slot)` of `keys` in order (`space` tells the rollups apart): recounts
/// and compactions of one slot run one at a time.
fn pg_lock_slots(keys: &str, space: u8) -> String {
    format!(
        "FOR slot_key IN SELECT DISTINCT x.workspace_id, x.slot FROM ({keys}) x ORDER BY 1, 2 LOOP
           PERFORM pg_advisory_xact_lock(
             hashtextextended(slot_key.workspace_id::text || ':' || slot_key.slot::text, {space}));
         END LOOP;"
    )
}

/// A trigger function (PL/pgSQL) running `body` (replacing one of the
/// name: later migrations redefine some).
fn pg_function(name: &str, body: &str) -> String {
    format!(
        "CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
         DECLARE slot_key record;
         BEGIN {body} RETURN NULL; END $$;"
    )
}

/// The keys `(agency_id, workspace_id, slot)` of an updated row, before
/// and after (`time`: the column placing a row in its slot).
fn pg_row_keys(time: &str) -> String {
    format!(
        "SELECT OLD.agency_id AS agency_id, OLD.workspace_id AS workspace_id, {old} AS slot \
         UNION SELECT NEW.agency_id, NEW.workspace_id, {new}",
        old = pg_slot(&format!("OLD.{time}")),
        new = pg_slot(&format!("NEW.{time}")),
    )
}

/// Fires only for rows whose counted `columns` changed: the condition is
/// evaluated without calling the function, so the many updates that
/// touch other columns (delivery status, due times, last message) cost
/// nothing.
fn pg_when_changed(columns: &dyn Fn(&str) -> String) -> String {
    format!(
        "WHEN (({}) IS DISTINCT FROM ({}))",
        columns("OLD"),
        columns("NEW")
    )
}

/// On PostgreSQL the rollups are append-only: every insert statement adds
/// one row per key with its batch's figures (no unique key, so concurrent
/// writers of the newest slot never wait on each other's row locks; the
/// reads sum), and the worker compacts a slot's rows into one
/// (`rapport_compact_report_rollups`). An update of a counted column or a
/// delete counts the touched slots again, in one statement (one snapshot
/// for what it removes and what it counts), under the slot's advisory
/// lock.
/// Adds the messages of `from` (a table or a parenthesised query, rows of
/// `messages`) to the slot rollup.
fn add_messages(from: &str, compacted: bool) -> String {
    let nil = "'00000000-0000-0000-0000-000000000000'::uuid";
    let rows = format!(
        "SELECT r.agency_id, r.workspace_id, {slot} AS slot, r.direction, r.channel_id, \
           {sentiment} AS sentiment, COALESCE(r.sent_by_membership_id, {nil}) AS member_id, \
           CAST(trunc(EXTRACT(EPOCH FROM (r.received_at - r.published_at)) * 1000) AS BIGINT) AS delay_ms \
         FROM {from} r",
        slot = pg_slot("r.received_at"),
        sentiment = sentiment("r"),
    );
    format!(
        "INSERT INTO report_message_slots (agency_id, {MESSAGE_KEY}, messages, delay_sum_ms, delay_max_ms, compacted) \
         SELECT agency_id, {MESSAGE_KEY}, COUNT(*), SUM(delay_ms), MAX(delay_ms), {compacted} \
         FROM ({rows}) x GROUP BY agency_id, {MESSAGE_KEY}"
    )
}

/// Counts the slots of `keys` (agency, workspace, slot) again. The
/// messages are found through `ix_messages_received` (agency, workspace,
/// direction, received time): keyed by workspace alone, each recount read
/// every message of every tenant.
fn recount(keys: &str) -> String {
    format!(
        "{lock}
         WITH gone AS (DELETE FROM report_message_slots s USING ({keys}) k
           WHERE s.workspace_id = k.workspace_id AND s.slot = k.slot)
         {add};",
        lock = pg_lock_slots(keys, 1),
        add = add_messages(
            &format!(
                "(SELECT m.* FROM messages m JOIN ({keys}) k ON m.agency_id = k.agency_id \
                  AND m.workspace_id = k.workspace_id AND m.direction IN ('INBOUND', 'OUTBOUND') \
                  AND m.received_at >= to_timestamp(k.slot) AND m.received_at < to_timestamp(k.slot + 900))"
            ),
            true
        )
    )
}

/// The function recounting the slots of an updated message.
pub(crate) fn recount_updated_sql() -> String {
    pg_function(
        "rapport_recount_messages_updated",
        &recount(&pg_row_keys("received_at")),
    )
}

/// The function recounting the slots of deleted messages.
pub(crate) fn recount_deleted_sql() -> String {
    pg_function(
        "rapport_recount_messages_deleted",
        &recount(&format!(
            "SELECT DISTINCT o.agency_id AS agency_id, o.workspace_id AS workspace_id, {} AS slot FROM old_rows o",
            pg_slot("o.received_at")
        )),
    )
}

fn postgres_sql() -> String {
    let add_sla = |from: &str, compacted: bool| {
        format!(
            "INSERT INTO report_sla_slots (agency_id, {SLA_KEY}, events, compacted) \
             SELECT agency_id, workspace_id, {slot} AS slot, target, kind, COUNT(*), {compacted} \
             FROM {from} r GROUP BY agency_id, workspace_id, 3, target, kind",
            slot = pg_slot("r.fired_at"),
        )
    };
    let add_fn = pg_function(
        "rapport_rollup_messages",
        &format!("{};", add_messages("new_rows", false)),
    );
    let sla_fn = pg_function(
        "rapport_rollup_sla_events",
        &format!("{};", add_sla("new_rows", false)),
    );
    let compact = |table: &str, key: &str, cols: &str, sums: &str, space: u8| {
        format!(
            "FOR slot_key IN SELECT DISTINCT workspace_id, slot FROM {table} WHERE NOT compacted
               ORDER BY 1, 2 LIMIT max_slots LOOP
               PERFORM pg_advisory_xact_lock(
                 hashtextextended(slot_key.workspace_id::text || ':' || slot_key.slot::text, {space}));
               WITH gone AS (DELETE FROM {table} s
                 WHERE s.workspace_id = slot_key.workspace_id AND s.slot = slot_key.slot RETURNING s.*)
               INSERT INTO {table} (agency_id, {key}, {cols}, compacted)
                 SELECT agency_id, {key}, {sums}, true FROM gone GROUP BY agency_id, {key};
               done := done + 1;
             END LOOP;"
        )
    };
    format!(
        "CREATE TABLE report_message_slots (
           agency_id uuid NOT NULL REFERENCES agencies (id) ON DELETE CASCADE,
           workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
           slot bigint NOT NULL, direction text NOT NULL, channel_id uuid NOT NULL,
           sentiment text NOT NULL, member_id uuid NOT NULL,
           messages bigint NOT NULL, delay_sum_ms bigint NOT NULL, delay_max_ms bigint NOT NULL,
           compacted boolean NOT NULL DEFAULT false);
         CREATE INDEX ix_report_message_slots_slot ON report_message_slots (workspace_id, slot);
         CREATE INDEX ix_report_message_slots_fresh ON report_message_slots (workspace_id, slot)
           WHERE NOT compacted;
         CREATE TABLE report_sla_slots (
           agency_id uuid NOT NULL REFERENCES agencies (id) ON DELETE CASCADE,
           workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
           slot bigint NOT NULL, target text NOT NULL, kind text NOT NULL, events bigint NOT NULL,
           compacted boolean NOT NULL DEFAULT false);
         CREATE INDEX ix_report_sla_slots_slot ON report_sla_slots (workspace_id, slot);
         CREATE INDEX ix_report_sla_slots_fresh ON report_sla_slots (workspace_id, slot)
           WHERE NOT compacted;
         {add_fn}
         CREATE TRIGGER report_message_slots_add AFTER INSERT ON messages
           REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rapport_rollup_messages();
         {updated_fn}
         CREATE TRIGGER report_message_slots_update AFTER UPDATE ON messages
           FOR EACH ROW {message_changed} EXECUTE FUNCTION rapport_recount_messages_updated();
         {deleted_fn}
         CREATE TRIGGER report_message_slots_delete AFTER DELETE ON messages
           REFERENCING OLD TABLE AS old_rows
           FOR EACH STATEMENT EXECUTE FUNCTION rapport_recount_messages_deleted();
         {sla_fn}
         CREATE TRIGGER report_sla_slots_add AFTER INSERT ON sla_events
           REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rapport_rollup_sla_events();
         {backfill_messages};
         {backfill_sla};
         UPDATE conversations c SET
           first_response_business_s = CASE WHEN c.first_responded_at >= c.created_at
             THEN CAST(trunc(EXTRACT(EPOCH FROM (c.first_responded_at - c.created_at))) AS BIGINT) END,
           resolution_business_s = CASE WHEN c.resolved_at >= c.created_at
             THEN CAST(trunc(EXTRACT(EPOCH FROM (c.resolved_at - c.created_at))) AS BIGINT) END
         WHERE c.sla_policy_id IS NULL OR NOT EXISTS
           (SELECT 1 FROM sla_policies p WHERE p.id = c.sla_policy_id AND p.business_hours);
         CREATE FUNCTION rapport_compact_report_rollups(max_slots integer) RETURNS bigint
         LANGUAGE plpgsql AS $$
         DECLARE slot_key record; done bigint := 0;
         BEGIN
           {compact_messages}
           {compact_sla}
           RETURN done;
         END $$;",
        updated_fn = recount_updated_sql(),
        message_changed = pg_when_changed(&counted),
        deleted_fn = recount_deleted_sql(),
        backfill_messages = add_messages("messages", true),
        backfill_sla = add_sla("sla_events", true),
        compact_messages = compact(
            "report_message_slots",
            MESSAGE_KEY,
            "messages, delay_sum_ms, delay_max_ms",
            "SUM(messages), SUM(delay_sum_ms), MAX(delay_max_ms)",
            1
        ),
        compact_sla = compact("report_sla_slots", SLA_KEY, "events", "SUM(events)", 2),
    )
}

/// The columns of conversation row `r` its slot's figures depend on.
fn conversation_counted(r: &str) -> String {
    [
        "workspace_id",
        "created_at",
        "priority",
        "opening_sentiment",
        "recovered",
        "first_responded_at",
        "resolved_at",
        "first_response_business_s",
        "resolution_business_s",
    ]
    .map(|c| format!("{r}.{c}"))
    .join(", ")
}

/// PostgreSQL only: opened conversations per slot and current priority,
/// with their response times as arrays of milliseconds, so a report reads
/// a few thousand rows instead of every conversation. Writers only mark a
/// slot dirty (`report_dirty_slots`, append-only: a new conversation, or
/// a change of a counted column); the worker counts dirty slots again
/// (`rapport_refresh_report_slots`, under the slot's advisory lock, the
/// marks it removes and the rows it counts read in one snapshot), and a
/// report reads a slot that is still dirty from the conversations
/// themselves. So a burst of messages in one workspace costs each writer
/// one small insert, never a recount of the busiest slot. SQLite runs in
/// process and reads the conversations themselves.
fn postgres_conversation_sql() -> String {
    format!(
        "CREATE TABLE report_conversation_slots (
           agency_id uuid NOT NULL REFERENCES agencies (id) ON DELETE CASCADE,
           workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
           slot bigint NOT NULL,
           priority text NOT NULL,
           opened bigint NOT NULL,
           negative bigint NOT NULL,
           recovered bigint NOT NULL,
           first_ms bigint[] NOT NULL,
           first_business_ms bigint[] NOT NULL,
           resolution_ms bigint[] NOT NULL,
           resolution_business_ms bigint[] NOT NULL,
           PRIMARY KEY (workspace_id, slot, priority));
         CREATE TABLE report_dirty_slots (
           agency_id uuid NOT NULL REFERENCES agencies (id) ON DELETE CASCADE,
           workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
           slot bigint NOT NULL);
         CREATE INDEX ix_report_dirty_slots_slot ON report_dirty_slots (workspace_id, slot);
         {inserted}
         CREATE TRIGGER report_conversation_slots_insert AFTER INSERT ON conversations
           REFERENCING NEW TABLE AS new_rows
           FOR EACH STATEMENT EXECUTE FUNCTION rapport_mark_conversations_inserted();
         {updated}
         CREATE TRIGGER report_conversation_slots_update AFTER UPDATE ON conversations
           FOR EACH ROW {changed} EXECUTE FUNCTION rapport_mark_conversation_updated();
         {deleted}
         CREATE TRIGGER report_conversation_slots_delete AFTER DELETE ON conversations
           REFERENCING OLD TABLE AS old_rows
           FOR EACH STATEMENT EXECUTE FUNCTION rapport_mark_conversations_deleted();
         {refresh}
         INSERT INTO report_dirty_slots (agency_id, workspace_id, slot)
           SELECT DISTINCT c.agency_id, c.workspace_id, {created} FROM conversations c;",
        refresh = refresh_slots_sql(),
        created = pg_slot("c.created_at"),
        inserted = pg_function(
            "rapport_mark_conversations_inserted",
            &mark_dirty(&format!(
                "SELECT DISTINCT n.agency_id, n.workspace_id, {} FROM new_rows n",
                pg_slot("n.created_at")
            ))
        ),
        updated = pg_function(
            "rapport_mark_conversation_updated",
            &mark_dirty(&format!(
                "SELECT OLD.agency_id, OLD.workspace_id, {old} \
                 UNION SELECT NEW.agency_id, NEW.workspace_id, {new}",
                old = pg_slot("OLD.created_at"),
                new = pg_slot("NEW.created_at"),
            ))
        ),
        changed = pg_when_changed(&conversation_counted),
        deleted = mark_deleted_sql(""),
    )
}

/// Marks the slots `keys` (a query of agency, workspace, slot) dirty.
fn mark_dirty(keys: &str) -> String {
    format!("INSERT INTO report_dirty_slots (agency_id, workspace_id, slot) {keys};")
}

/// The function marking the slots of deleted conversations dirty, for the
/// rows of `old_rows o` that pass `filter` (a ` WHERE …`, or nothing).
pub(crate) fn mark_deleted_sql(filter: &str) -> String {
    pg_function(
        "rapport_mark_conversations_deleted",
        &mark_dirty(&format!(
            "SELECT DISTINCT o.agency_id, o.workspace_id, {} FROM old_rows o{filter}",
            pg_slot("o.created_at")
        )),
    )
}

/// `rapport_refresh_report_slots(max_slots)`: counts dirty conversation
/// slots again, each under its advisory lock. The slot's old rows go in a
/// statement of their own first: a data-modifying `WITH` that nothing reads
/// runs after the main statement, so deleting them there let the new rows
/// collide with the old ones on the primary key (and the whole pass failed
/// whenever a slot counted before was dirty again). The marks removed and
/// the conversations counted still share one statement, one snapshot.
pub(crate) fn refresh_slots_sql() -> String {
    refresh_slots_counting("")
}

/// [`refresh_slots_sql`] counting only conversations that also pass
/// `filter` (an `AND …` on `c`).
pub(crate) fn refresh_slots_counting(filter: &str) -> String {
    let ms = |later: &str| {
        format!("CAST(trunc(EXTRACT(EPOCH FROM (c.{later} - c.created_at)) * 1000) AS BIGINT)")
    };
    format!(
        "CREATE OR REPLACE FUNCTION rapport_refresh_report_slots(max_slots integer) RETURNS bigint
         LANGUAGE plpgsql AS $$
         DECLARE slot_key record; done bigint := 0;
         BEGIN
           FOR slot_key IN SELECT DISTINCT workspace_id, slot, agency_id FROM report_dirty_slots
             ORDER BY 1, 2 LIMIT max_slots LOOP
             PERFORM pg_advisory_xact_lock(
               hashtextextended(slot_key.workspace_id::text || ':' || slot_key.slot::text, 7));
             DELETE FROM report_conversation_slots s
               WHERE s.workspace_id = slot_key.workspace_id AND s.slot = slot_key.slot;
             WITH marks AS (DELETE FROM report_dirty_slots d
                 WHERE d.workspace_id = slot_key.workspace_id AND d.slot = slot_key.slot)
             INSERT INTO report_conversation_slots (agency_id, workspace_id, slot, priority, opened,
               negative, recovered, first_ms, first_business_ms, resolution_ms, resolution_business_ms)
             SELECT c.agency_id, c.workspace_id, slot_key.slot, c.priority, COUNT(*),
               SUM(CASE WHEN c.opening_sentiment <= -0.05 THEN 1 ELSE 0 END),
               SUM(CASE WHEN c.opening_sentiment <= -0.05 AND c.recovered THEN 1 ELSE 0 END),
               COALESCE(array_agg({first}) FILTER (WHERE c.first_responded_at >= c.created_at), '{{}}'),
               COALESCE(array_agg(c.first_response_business_s * 1000)
                 FILTER (WHERE c.first_responded_at >= c.created_at AND c.first_response_business_s IS NOT NULL), '{{}}'),
               COALESCE(array_agg({resolution}) FILTER (WHERE c.resolved_at >= c.created_at), '{{}}'),
               COALESCE(array_agg(c.resolution_business_s * 1000)
                 FILTER (WHERE c.resolved_at >= c.created_at AND c.resolution_business_s IS NOT NULL), '{{}}')
             FROM conversations c WHERE c.agency_id = slot_key.agency_id
               AND c.workspace_id = slot_key.workspace_id
               AND c.created_at >= to_timestamp(slot_key.slot) AND c.created_at < to_timestamp(slot_key.slot + 900)
               {filter}
             GROUP BY c.agency_id, c.workspace_id, c.priority;
             done := done + 1;
           END LOOP;
           RETURN done;
         END $$;",
        first = ms("first_responded_at"),
        resolution = ms("resolved_at"),
    )
}

/// Microseconds since the epoch of an RFC 3339 UTC text timestamp (as
/// sqlx stores them: 0, 3, 6 or 9 fraction digits, then `+00:00`), exact
/// where `julianday` would be off by tens of microseconds.
fn sqlite_epoch_us(t: &str) -> String {
    format!(
        "(CAST(strftime('%s', substr({t}, 1, 19)) AS INTEGER) * 1000000 + \
         CASE WHEN substr({t}, 20, 1) = '.' \
         THEN CAST(substr(substr({t}, 21, instr({t}, '+') - 21) || '000000', 1, 6) AS INTEGER) ELSE 0 END)"
    )
}

fn sqlite_sql() -> String {
    // The slot comes from the whole seconds (SQLite's date functions would
    // round a fraction up into the next slot).
    let slot = |col: &str| {
        format!("((CAST(strftime('%s', substr({col}, 1, 19)) AS INTEGER) / 900) * 900)")
    };
    let nil = "X'00000000000000000000000000000000'";
    // Integer division truncates toward zero, as PostgreSQL's trunc.
    let delay = |r: &str| {
        format!(
            "(({} - {}) / 1000)",
            sqlite_epoch_us(&format!("{r}.received_at")),
            sqlite_epoch_us(&format!("{r}.published_at"))
        )
    };
    let seconds = |later: &str| {
        format!(
            "(({} - {}) / 1000000)",
            sqlite_epoch_us(later),
            sqlite_epoch_us("c.created_at")
        )
    };
    let add_from = |from: &str| {
        format!(
            "INSERT INTO report_message_slots (agency_id, {MESSAGE_KEY}, messages, delay_sum_ms, delay_max_ms)
               SELECT r.agency_id, r.workspace_id, {slot}, r.direction, r.channel_id, {sentiment},
                      COALESCE(r.sent_by_membership_id, {nil}), COUNT(*), SUM({delay}), MAX({delay})
               FROM {from} GROUP BY 1, 2, 3, 4, 5, 6, 7",
            slot = slot("r.received_at"),
            sentiment = sentiment("r"),
            delay = delay("r"),
        )
    };
    // One slot of `row` (OLD or NEW) counted again from the rows.
    let recount = |row: &str| {
        let text = |secs: String| {
            format!("(strftime('%Y-%m-%dT%H:%M:%S', {secs}, 'unixepoch') || '+00:00')")
        };
        let at = slot(&format!("{row}.received_at"));
        format!(
            "DELETE FROM report_message_slots WHERE workspace_id = {row}.workspace_id AND slot = {at};
             {add};",
            add = add_from(&format!(
                "messages r WHERE r.workspace_id = {row}.workspace_id \
                 AND r.received_at >= {lo} AND r.received_at < {hi}",
                lo = text(at.clone()),
                hi = text(format!("{at} + 900")),
            ))
        )
    };
    format!(
        "CREATE TRIGGER report_message_slots_add AFTER INSERT ON messages BEGIN
           INSERT INTO report_message_slots (agency_id, {MESSAGE_KEY}, messages, delay_sum_ms, delay_max_ms)
           VALUES (NEW.agency_id, NEW.workspace_id, {new_slot}, NEW.direction, NEW.channel_id, {new_sentiment},
                   COALESCE(NEW.sent_by_membership_id, {nil}), 1, {new_delay}, {new_delay})
           ON CONFLICT ({MESSAGE_KEY}) DO UPDATE SET messages = messages + 1,
             delay_sum_ms = delay_sum_ms + excluded.delay_sum_ms,
             delay_max_ms = MAX(delay_max_ms, excluded.delay_max_ms);
         END;
         CREATE TRIGGER report_message_slots_update AFTER UPDATE OF {counted} ON messages BEGIN
           {recount_old}
           {recount_new}
         END;
         CREATE TRIGGER report_message_slots_delete AFTER DELETE ON messages BEGIN
           {recount_old}
         END;
         CREATE TRIGGER report_sla_slots_add AFTER INSERT ON sla_events BEGIN
           INSERT INTO report_sla_slots (agency_id, {SLA_KEY}, events)
           VALUES (NEW.agency_id, NEW.workspace_id, {new_fired}, NEW.target, NEW.kind, 1)
           ON CONFLICT ({SLA_KEY}) DO UPDATE SET events = events + 1;
         END;
         {backfill_messages};
         INSERT INTO report_sla_slots (agency_id, {SLA_KEY}, events)
           SELECT r.agency_id, r.workspace_id, {r_fired}, r.target, r.kind, COUNT(*)
           FROM sla_events r GROUP BY 1, 2, 3, 4, 5;
         UPDATE conversations AS c SET
           first_response_business_s = CASE WHEN c.first_responded_at >= c.created_at THEN {first} END,
           resolution_business_s = CASE WHEN c.resolved_at >= c.created_at THEN {resolved} END
         WHERE c.sla_policy_id IS NULL OR NOT EXISTS
           (SELECT 1 FROM sla_policies p WHERE p.id = c.sla_policy_id AND p.business_hours);",
        new_slot = slot("NEW.received_at"),
        new_sentiment = sentiment("NEW"),
        new_delay = delay("NEW"),
        new_fired = slot("NEW.fired_at"),
        counted = "workspace_id, direction, channel_id, sentiment, published_at, received_at, sent_by_membership_id",
        recount_old = recount("OLD"),
        recount_new = recount("NEW"),
        backfill_messages = add_from("messages r"),
        r_fired = slot("r.fired_at"),
        first = seconds("c.first_responded_at"),
        resolved = seconds("c.resolved_at"),
    )
}

/// SQLite's rollups: one row per key, added to in place (one writer).
async fn sqlite_tables(m: &SchemaManager<'_>) -> Result<(), DbErr> {
    m.create_table(
        Table::create()
            .table(n("report_message_slots"))
            .col(uuid(n("agency_id")))
            .col(uuid(n("workspace_id")))
            .col(big_integer(n("slot")))
            .col(text(n("direction")))
            .col(uuid(n("channel_id")))
            .col(text(n("sentiment")))
            .col(uuid(n("member_id")))
            .col(big_integer(n("messages")))
            .col(big_integer(n("delay_sum_ms")))
            .col(big_integer(n("delay_max_ms")))
            .primary_key(
                Index::create()
                    .col(n("workspace_id"))
                    .col(n("slot"))
                    .col(n("direction"))
                    .col(n("channel_id"))
                    .col(n("sentiment"))
                    .col(n("member_id")),
            )
            .foreign_key(&mut fk("report_message_slots", "agency_id", "agencies"))
            .foreign_key(&mut fk(
                "report_message_slots",
                "workspace_id",
                "workspaces",
            ))
            .to_owned(),
    )
    .await?;
    m.create_table(
        Table::create()
            .table(n("report_sla_slots"))
            .col(uuid(n("agency_id")))
            .col(uuid(n("workspace_id")))
            .col(big_integer(n("slot")))
            .col(text(n("target")))
            .col(text(n("kind")))
            .col(big_integer(n("events")))
            .primary_key(
                Index::create()
                    .col(n("workspace_id"))
                    .col(n("slot"))
                    .col(n("target"))
                    .col(n("kind")),
            )
            .foreign_key(&mut fk("report_sla_slots", "agency_id", "agencies"))
            .foreign_key(&mut fk("report_sla_slots", "workspace_id", "workspaces"))
            .to_owned(),
    )
    .await?;
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() != DbBackend::Postgres {
            sqlite_tables(m).await?;
        }
        for col in ["first_response_business_s", "resolution_business_s"] {
            m.alter_table(
                Table::alter()
                    .table(n("conversations"))
                    .add_column(big_integer_null(n(col)))
                    .to_owned(),
            )
            .await?;
        }
        // Conversations whose business-time figures the report computes
        // (written before they were kept): found without a scan.
        m.get_connection()
            .execute_unprepared(&format!(
                "CREATE INDEX ix_conversations_unstamped ON conversations \
                 (agency_id, workspace_id, created_at) WHERE {UNSTAMPED}"
            ))
            .await?;
        let db = m.get_connection();
        match m.get_database_backend() {
            DbBackend::Postgres => {
                db.execute_unprepared(&postgres_sql()).await?;
                db.execute_unprepared(&postgres_conversation_sql()).await?;
                protect(m, TABLES).await?;
                protect(m, &["report_conversation_slots", "report_dirty_slots"]).await
            }
            _ => db.execute_unprepared(&sqlite_sql()).await.map(|_| ()),
        }
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        match m.get_database_backend() {
            DbBackend::Postgres => {
                db.execute_unprepared(
                    "DROP TRIGGER report_message_slots_add ON messages;
                     DROP TRIGGER report_sla_slots_add ON sla_events;
                     DROP TRIGGER report_message_slots_update ON messages;
                     DROP TRIGGER report_message_slots_delete ON messages;
                     DROP FUNCTION rapport_recount_messages_updated();
                     DROP FUNCTION rapport_recount_messages_deleted();
                     DROP TRIGGER report_conversation_slots_insert ON conversations;
                     DROP TRIGGER report_conversation_slots_update ON conversations;
                     DROP TRIGGER report_conversation_slots_delete ON conversations;
                     DROP TABLE report_conversation_slots;
                     DROP TABLE report_dirty_slots;
                     DROP FUNCTION rapport_mark_conversations_inserted();
                     DROP FUNCTION rapport_mark_conversation_updated();
                     DROP FUNCTION rapport_mark_conversations_deleted();
                     DROP FUNCTION rapport_refresh_report_slots(integer);
                     DROP FUNCTION rapport_rollup_messages();
                     DROP FUNCTION rapport_compact_report_rollups(integer);
                     DROP FUNCTION rapport_rollup_sla_events();",
                )
                .await?;
            }
            _ => {
                db.execute_unprepared(
                    "DROP TRIGGER report_message_slots_add; DROP TRIGGER report_sla_slots_add;
                     DROP TRIGGER report_message_slots_update;
                     DROP TRIGGER report_message_slots_delete;",
                )
                .await?;
            }
        }
        db.execute_unprepared("DROP INDEX ix_conversations_unstamped")
            .await?;
        for col in ["first_response_business_s", "resolution_business_s"] {
            m.alter_table(
                Table::alter()
                    .table(n("conversations"))
                    .drop_column(n(col))
                    .to_owned(),
            )
            .await?;
        }
        for table in TABLES {
            m.drop_table(Table::drop().table(n(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}
