//! `messages.delivery_unsure`: whether a FAILED reply's last attempt may
//! have published it (its answer was lost: a timeout, a 5xx, an attempt cut
//! off) rather than being refused outright. A reply sent again with
//! `retryReply` looks on the platform before posting only in the first
//! case; reading that from the error's text would take a refusal for a
//! lost answer.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261206_000012_reply_delivery_unsure"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // A constant default: PostgreSQL adds it without rewriting the
        // table. Replies FAILED before it read as refused outright, as
        // nothing told them apart.
        m.alter_table(
            Table::alter()
                .table(Alias::new("messages"))
                .add_column(
                    ColumnDef::new(Alias::new("delivery_unsure"))
                        .boolean()
                        .not_null()
                        .default(false),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Alias::new("messages"))
                .drop_column(Alias::new("delivery_unsure"))
                .to_owned(),
        )
        .await
    }
}
