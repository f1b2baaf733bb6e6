//! The whole data model. Every tenant table carries `agency_id` and every hot
//! query has an index that starts with it (or with a key that implies it), so
//! reads are index range scans scoped by tenant. Keys are UUIDv7 (time
//! ordered), which makes `id` a usable keyset-pagination order.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261128_000001_initial"
    }
}

fn n(s: &str) -> Alias {
    Alias::new(s)
}

/// A table with a UUID primary key and `created_at`.
fn table(name: &str) -> TableCreateStatement {
    Table::create()
        .table(n(name))
        .col(pk_uuid(n("id")))
        .col(timestamp_with_time_zone(n("created_at")))
        .take()
}

/// A tenant-owned table: also `agency_id`, referencing agencies.
fn tenant_table(name: &str) -> TableCreateStatement {
    let mut t = table(name);
    t.col(uuid(n("agency_id")));
    fk(
        &mut t,
        name,
        "agency_id",
        "agencies",
        ForeignKeyAction::Cascade,
    );
    t
}

fn fk(t: &mut TableCreateStatement, from: &str, col: &str, to: &str, on_delete: ForeignKeyAction) {
    t.foreign_key(
        ForeignKey::create()
            .name(format!("fk_{from}_{col}"))
            .from(n(from), n(col))
            .to(n(to), n("id"))
            .on_delete(on_delete),
    );
}

fn index(table: &str, name: &str, cols: &[&str], unique: bool) -> IndexCreateStatement {
    let mut i = Index::create();
    i.name(format!(
        "{}_{table}_{name}",
        if unique { "ux" } else { "ix" }
    ))
    .table(n(table));
    for c in cols {
        i.col(n(c));
    }
    if unique {
        i.unique();
    }
    i.take()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        use ForeignKeyAction::{Cascade, SetNull};

        // Tenants.
        m.create_table(table("agencies").col(text(n("name"))).take())
            .await?;

        // People: global identities; membership ties them to agencies.
        m.create_table(
            table("users")
                .col(text(n("email")))
                .col(text(n("name")))
                .col(text_null(n("password_hash")))
                .take(),
        )
        .await?;
        m.create_index(index("users", "email", &["email"], true))
            .await?;

        let mut t = tenant_table("workspaces");
        t.col(text(n("name")))
            .col(text(n("timezone")))
            .col(json_binary(n("brand_keywords")))
            .col(json_binary(n("banned_phrases")))
            .col(json_binary(n("urgency_keywords")))
            .col(timestamp_with_time_zone(n("updated_at")))
            .col(timestamp_with_time_zone_null(n("archived_at")));
        m.create_table(t).await?;
        m.create_index(index("workspaces", "name", &["agency_id", "name"], true))
            .await?;

        let mut t = tenant_table("memberships");
        t.col(uuid(n("user_id")))
            .col(text(n("role")))
            .col(boolean(n("restricted")))
            .col(text_null(n("invitation_hash")))
            .col(timestamp_with_time_zone_null(n("accepted_at")))
            .col(timestamp_with_time_zone(n("updated_at")));
        fk(&mut t, "memberships", "user_id", "users", Cascade);
        m.create_table(t).await?;
        m.create_index(index(
            "memberships",
            "user",
            &["agency_id", "user_id"],
            true,
        ))
        .await?;
        m.create_index(index("memberships", "user_id", &["user_id"], false))
            .await?;
        m.create_index(index(
            "memberships",
            "invitation",
            &["invitation_hash"],
            true,
        ))
        .await?;

        // Which workspaces a restricted member may see.
        let mut t = Table::create()
            .table(n("membership_workspaces"))
            .col(uuid(n("agency_id")))
            .col(uuid(n("membership_id")))
            .col(uuid(n("workspace_id")))
            .primary_key(
                Index::create()
                    .col(n("membership_id"))
                    .col(n("workspace_id")),
            )
            .take();
        fk(
            &mut t,
            "membership_workspaces",
            "agency_id",
            "agencies",
            Cascade,
        );
        fk(
            &mut t,
            "membership_workspaces",
            "membership_id",
            "memberships",
            Cascade,
        );
        fk(
            &mut t,
            "membership_workspaces",
            "workspace_id",
            "workspaces",
            Cascade,
        );
        m.create_table(t).await?;
        m.create_index(index(
            "membership_workspaces",
            "workspace",
            &["agency_id", "workspace_id"],
            false,
        ))
        .await?;

        // Login sessions: one row per refresh-token family. The token is
        // stored hashed; rotation replaces the hash and remembers the last
        // one, so a replayed (stolen) token revokes the whole session.
        let mut t = tenant_table("sessions");
        t.col(uuid(n("user_id")))
            .col(text(n("refresh_hash")))
            .col(text_null(n("previous_hash")))
            .col(timestamp_with_time_zone(n("expires_at")))
            .col(timestamp_with_time_zone(n("last_used_at")))
            .col(timestamp_with_time_zone_null(n("revoked_at")));
        fk(&mut t, "sessions", "user_id", "users", Cascade);
        m.create_table(t).await?;
        m.create_index(index("sessions", "refresh", &["refresh_hash"], true))
            .await?;
        m.create_index(index("sessions", "previous", &["previous_hash"], false))
            .await?;
        m.create_index(index("sessions", "user", &["agency_id", "user_id"], false))
            .await?;

        let mut t = tenant_table("channels");
        t.col(uuid(n("workspace_id")))
            .col(text(n("kind")))
            .col(text(n("name")))
            .col(text(n("external_account_id")))
            .col(blob_null(n("secret_ciphertext")))
            .col(blob_null(n("verify_token_ciphertext")))
            .col(text_null(n("feed_url")))
            .col(integer_null(n("poll_interval_seconds")))
            .col(text(n("status")))
            .col(json_binary(n("state")))
            .col(timestamp_with_time_zone(n("updated_at")));
        fk(&mut t, "channels", "workspace_id", "workspaces", Cascade);
        m.create_table(t).await?;
        m.create_index(index(
            "channels",
            "account",
            &["workspace_id", "kind", "external_account_id"],
            true,
        ))
        .await?;
        m.create_index(index(
            "channels",
            "workspace",
            &["agency_id", "workspace_id"],
            false,
        ))
        .await?;

        let mut t = tenant_table("authors");
        t.col(text(n("platform")))
            .col(text(n("external_id")))
            .col(text(n("handle")))
            .col(text_null(n("display_name")))
            .col(big_integer(n("follower_count")))
            .col(boolean(n("verified")))
            .col(timestamp_with_time_zone(n("updated_at")));
        m.create_table(t).await?;
        m.create_index(index(
            "authors",
            "external",
            &["agency_id", "platform", "external_id"],
            true,
        ))
        .await?;

        let mut t = tenant_table("business_calendars");
        t.col(uuid(n("workspace_id")))
            .col(text(n("name")))
            .col(text(n("timezone")))
            .col(json_binary(n("weekly_hours")))
            .col(json_binary(n("holidays")))
            .col(timestamp_with_time_zone(n("updated_at")));
        fk(
            &mut t,
            "business_calendars",
            "workspace_id",
            "workspaces",
            Cascade,
        );
        m.create_table(t).await?;
        m.create_index(index(
            "business_calendars",
            "workspace",
            &["agency_id", "workspace_id"],
            false,
        ))
        .await?;

        let mut t = tenant_table("sla_policies");
        t.col(uuid(n("workspace_id")))
            .col(text(n("name")))
            .col(integer(n("position")))
            .col(boolean(n("is_default")))
            .col(json_binary(n("conditions")))
            .col(json_binary(n("targets")))
            .col(boolean(n("business_hours")))
            .col(uuid_null(n("calendar_id")))
            .col(integer(n("warn_at_percent")))
            .col(json_binary(n("escalation")))
            .col(timestamp_with_time_zone(n("updated_at")))
            .col(timestamp_with_time_zone_null(n("deleted_at")));
        fk(
            &mut t,
            "sla_policies",
            "workspace_id",
            "workspaces",
            Cascade,
        );
        fk(
            &mut t,
            "sla_policies",
            "calendar_id",
            "business_calendars",
            SetNull,
        );
        m.create_table(t).await?;
        m.create_index(index(
            "sla_policies",
            "workspace",
            &["agency_id", "workspace_id", "position"],
            false,
        ))
        .await?;

        let mut t = tenant_table("conversations");
        t.col(uuid(n("workspace_id")))
            .col(uuid(n("channel_id")))
            .col(uuid(n("author_id")))
            .col(uuid_null(n("parent_conversation_id")))
            .col(text(n("status")))
            .col(text(n("visibility")))
            .col(text(n("priority")))
            .col(double(n("priority_score")))
            .col(json_binary(n("priority_breakdown")))
            .col(double_null(n("sentiment")))
            .col(double_null(n("opening_sentiment")))
            .col(uuid_null(n("assignee_membership_id")))
            .col(uuid_null(n("sla_policy_id")))
            .col(json_binary_null(n("sla_targets")))
            .col(timestamp_with_time_zone_null(n("first_response_due_at")))
            .col(timestamp_with_time_zone_null(n("next_response_due_at")))
            .col(timestamp_with_time_zone_null(n("resolution_due_at")))
            // The earliest deadline still running: the inbox's DUE order.
            .col(timestamp_with_time_zone_null(n("due_at")))
            .col(timestamp_with_time_zone_null(n("first_responded_at")))
            .col(timestamp_with_time_zone_null(n("resolved_at")))
            .col(timestamp_with_time_zone(n("last_customer_message_at")))
            .col(boolean(n("recovered")))
            .col(timestamp_with_time_zone(n("updated_at")));
        fk(
            &mut t,
            "conversations",
            "workspace_id",
            "workspaces",
            Cascade,
        );
        fk(&mut t, "conversations", "channel_id", "channels", Cascade);
        fk(&mut t, "conversations", "author_id", "authors", Cascade);
        fk(
            &mut t,
            "conversations",
            "parent_conversation_id",
            "conversations",
            SetNull,
        );
        fk(
            &mut t,
            "conversations",
            "assignee_membership_id",
            "memberships",
            SetNull,
        );
        fk(
            &mut t,
            "conversations",
            "sla_policy_id",
            "sla_policies",
            SetNull,
        );
        m.create_table(t).await?;
        for (name, cols) in [
            ("inbox", &["agency_id", "workspace_id", "status", "id"][..]),
            ("due", &["agency_id", "status", "due_at"][..]),
            (
                "workspace_due",
                &["agency_id", "workspace_id", "due_at"][..],
            ),
            ("priority", &["agency_id", "status", "priority_score"][..]),
            ("author", &["workspace_id", "author_id", "status"][..]),
        ] {
            m.create_index(index("conversations", name, cols, false))
                .await?;
        }

        let mut t = tenant_table("reply_templates");
        t.col(uuid_null(n("workspace_id")))
            .col(text(n("name")))
            .col(text(n("body")))
            .col(json_binary(n("slots")))
            .col(json_binary(n("channel_kinds")))
            .col(json_binary(n("enabled_workspace_ids")))
            .col(text(n("intent")))
            .col(timestamp_with_time_zone(n("updated_at")))
            .col(timestamp_with_time_zone_null(n("archived_at")));
        fk(
            &mut t,
            "reply_templates",
            "workspace_id",
            "workspaces",
            Cascade,
        );
        m.create_table(t).await?;
        m.create_index(index(
            "reply_templates",
            "workspace",
            &["agency_id", "workspace_id", "name"],
            false,
        ))
        .await?;

        let mut t = tenant_table("messages");
        t.col(uuid(n("workspace_id")))
            .col(uuid(n("conversation_id")))
            .col(uuid(n("channel_id")))
            .col(uuid_null(n("author_id")))
            .col(text(n("external_id")))
            .col(text_null(n("in_reply_to_external_id")))
            .col(text(n("direction")))
            .col(text(n("visibility")))
            .col(text(n("body")))
            // Outbound replies: the body with context values masked, as the
            // canned-reply guard compares it.
            .col(text_null(n("masked_body")))
            .col(double_null(n("sentiment")))
            .col(timestamp_with_time_zone(n("published_at")))
            .col(timestamp_with_time_zone(n("received_at")))
            .col(uuid_null(n("template_id")))
            .col(uuid_null(n("sent_by_membership_id")))
            .col(text_null(n("delivery_status")))
            .col(text_null(n("delivery_error")));
        fk(&mut t, "messages", "workspace_id", "workspaces", Cascade);
        fk(
            &mut t,
            "messages",
            "conversation_id",
            "conversations",
            Cascade,
        );
        fk(&mut t, "messages", "channel_id", "channels", Cascade);
        fk(&mut t, "messages", "author_id", "authors", SetNull);
        fk(
            &mut t,
            "messages",
            "template_id",
            "reply_templates",
            SetNull,
        );
        fk(
            &mut t,
            "messages",
            "sent_by_membership_id",
            "memberships",
            SetNull,
        );
        m.create_table(t).await?;
        // A keyword-routed mention may land in several workspaces, once each.
        m.create_index(index(
            "messages",
            "external",
            &["channel_id", "external_id", "workspace_id"],
            true,
        ))
        .await?;
        m.create_index(index(
            "messages",
            "conversation",
            &["agency_id", "conversation_id", "id"],
            false,
        ))
        .await?;
        m.create_index(index(
            "messages",
            "workspace",
            &["agency_id", "workspace_id", "direction", "published_at"],
            false,
        ))
        .await?;

        let mut t = tenant_table("sla_events");
        t.col(uuid(n("workspace_id")))
            .col(uuid(n("conversation_id")))
            .col(text(n("kind")))
            .col(text(n("target")))
            .col(integer(n("cycle")))
            .col(timestamp_with_time_zone(n("deadline_at")))
            .col(timestamp_with_time_zone(n("fired_at")))
            .col(big_integer(n("lateness_ms")));
        fk(&mut t, "sla_events", "workspace_id", "workspaces", Cascade);
        fk(
            &mut t,
            "sla_events",
            "conversation_id",
            "conversations",
            Cascade,
        );
        m.create_table(t).await?;
        // Exactly once per conversation, target, kind and clock cycle.
        m.create_index(index(
            "sla_events",
            "once",
            &["conversation_id", "target", "kind", "cycle"],
            true,
        ))
        .await?;
        m.create_index(index(
            "sla_events",
            "workspace",
            &["agency_id", "workspace_id", "fired_at"],
            false,
        ))
        .await?;

        let mut t = tenant_table("webhook_subscriptions");
        t.col(uuid(n("workspace_id")))
            .col(text(n("url")))
            .col(json_binary(n("events")))
            .col(blob(n("secret_ciphertext")))
            .col(boolean(n("active")))
            .col(timestamp_with_time_zone(n("updated_at")));
        fk(
            &mut t,
            "webhook_subscriptions",
            "workspace_id",
            "workspaces",
            Cascade,
        );
        m.create_table(t).await?;
        m.create_index(index(
            "webhook_subscriptions",
            "workspace",
            &["agency_id", "workspace_id"],
            false,
        ))
        .await?;

        // Outbox of outgoing webhook deliveries, retried with backoff.
        let mut t = tenant_table("webhook_deliveries");
        t.col(uuid(n("subscription_id")))
            .col(text(n("event_type")))
            .col(text(n("idempotency_key")))
            .col(json_binary(n("payload")))
            .col(text(n("status")))
            .col(integer(n("attempts")))
            .col(timestamp_with_time_zone(n("next_attempt_at")))
            .col(text_null(n("last_error")))
            .col(timestamp_with_time_zone_null(n("delivered_at")));
        fk(
            &mut t,
            "webhook_deliveries",
            "subscription_id",
            "webhook_subscriptions",
            Cascade,
        );
        m.create_table(t).await?;
        m.create_index(index(
            "webhook_deliveries",
            "once",
            &["subscription_id", "idempotency_key"],
            true,
        ))
        .await?;
        m.create_index(index(
            "webhook_deliveries",
            "due",
            &["status", "next_attempt_at"],
            false,
        ))
        .await?;
        m.create_index(index(
            "webhook_deliveries",
            "subscription",
            &["agency_id", "subscription_id", "id"],
            false,
        ))
        .await?;

        // Inbound events exactly as received, before parsing: durable first.
        let mut t = tenant_table("raw_events");
        t.col(uuid(n("channel_id")))
            .col(uuid(n("workspace_id")))
            .col(text(n("dedup_key")))
            .col(json_binary(n("headers")))
            .col(blob(n("body")))
            .col(text(n("status")))
            .col(text_null(n("error")))
            .col(timestamp_with_time_zone_null(n("processed_at")));
        fk(&mut t, "raw_events", "channel_id", "channels", Cascade);
        fk(&mut t, "raw_events", "workspace_id", "workspaces", Cascade);
        m.create_table(t).await?;
        m.create_index(index(
            "raw_events",
            "dedup",
            &["channel_id", "dedup_key"],
            true,
        ))
        .await?;
        m.create_index(index(
            "raw_events",
            "pending",
            &["status", "created_at"],
            false,
        ))
        .await?;

        let mut t = tenant_table("audit_log");
        t.col(uuid_null(n("actor_user_id")))
            .col(uuid_null(n("workspace_id")))
            .col(text(n("action")))
            .col(text_null(n("target_type")))
            .col(uuid_null(n("target_id")))
            .col(json_binary(n("details")));
        fk(&mut t, "audit_log", "actor_user_id", "users", SetNull);
        fk(&mut t, "audit_log", "workspace_id", "workspaces", SetNull);
        m.create_table(t).await?;
        m.create_index(index("audit_log", "agency", &["agency_id", "id"], false))
            .await?;
        m.create_index(index(
            "audit_log",
            "workspace",
            &["agency_id", "workspace_id", "id"],
            false,
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            "audit_log",
            "raw_events",
            "webhook_deliveries",
            "webhook_subscriptions",
            "sla_events",
            "messages",
            "reply_templates",
            "conversations",
            "sla_policies",
            "business_calendars",
            "authors",
            "channels",
            "sessions",
            "membership_workspaces",
            "memberships",
            "workspaces",
            "users",
            "agencies",
        ] {
            m.drop_table(Table::drop().table(n(t)).to_owned()).await?;
        }
        Ok(())
    }
}
