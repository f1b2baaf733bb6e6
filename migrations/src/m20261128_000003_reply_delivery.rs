//! Publishing replies: delivery attempts and their schedule on each outbound
//! message, the platform's id once sent, a channel's publishing credentials
//! (sealed) or callback URL, and each workspace's canned-reply guard tuning.

use crate::later::n;
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261128_000003_reply_delivery"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // SQLite takes one ALTER per column.
        let columns: Vec<(&str, ColumnDef)> = vec![
            (
                "messages",
                integer(n("delivery_attempts")).default(0).take(),
            ),
            (
                "messages",
                timestamp_with_time_zone_null(n("next_delivery_at")),
            ),
            ("messages", timestamp_with_time_zone_null(n("delivered_at"))),
            ("messages", text_null(n("platform_message_id"))),
            ("messages", text_null(n("intent"))),
            ("channels", blob_null(n("access_token_ciphertext"))),
            ("channels", text_null(n("callback_url"))),
            ("workspaces", double_null(n("similarity_threshold"))),
            ("workspaces", integer_null(n("duplicate_window_days"))),
        ];
        for (table, mut col) in columns {
            m.alter_table(Table::alter().table(n(table)).add_column(&mut col).take())
                .await?;
        }
        // The delivery sweeper's scan: due, undelivered replies.
        m.create_index(
            Index::create()
                .name("ix_messages_delivery_due")
                .table(n("messages"))
                .col(n("delivery_status"))
                .col(n("next_delivery_at"))
                .take(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name("ix_messages_delivery_due")
                .table(n("messages"))
                .to_owned(),
        )
        .await?;
        for (table, col) in [
            ("messages", "delivery_attempts"),
            ("messages", "next_delivery_at"),
            ("messages", "delivered_at"),
            ("messages", "platform_message_id"),
            ("messages", "intent"),
            ("channels", "access_token_ciphertext"),
            ("channels", "callback_url"),
            ("workspaces", "similarity_threshold"),
            ("workspaces", "duplicate_window_days"),
        ] {
            m.alter_table(Table::alter().table(n(table)).drop_column(n(col)).take())
                .await?;
        }
        Ok(())
    }
}
