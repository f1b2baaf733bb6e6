//! The ingestion job: a raw event becomes deduplicated messages from
//! upserted authors, threaded into conversations and ranked. All of one raw
//! event's effects commit in one transaction together with marking it
//! processed, so a crash at any point means a clean retry: at-least-once
//! delivery, exactly-once effect.

use crate::registry::Permanent;
use anyhow::Context;
use chrono::Utc;
use rapport_domain::ingest::{self, ChannelKind};
use rapport_store::Kv;
use rapport_store::entities::{channel, raw_event, workspace};
use rapport_store::ingest::{announce, store_batch, targets};
use rapport_store::raw_events::{FAILED, PROCESSED};
use rapport_store::tenancy::begin_rederivable_for_agency;
use sea_orm::sea_query::{Condition, Expr};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use serde_json::Value;
use uuid::Uuid;

#[derive(Clone)]
pub struct Ingestor {
    pub db: DatabaseConnection,
    pub kv: Kv,
}

fn raw_id(payload: &Value) -> anyhow::Result<Uuid> {
    payload
        .get("raw_event_id")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| Permanent("job has no raw_event_id".into()).into())
}

impl Ingestor {
    pub async fn handle(&self, payload: Value) -> anyhow::Result<()> {
        let id = raw_id(&payload)?;
        let raw = raw_event::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or_else(|| Permanent(format!("raw event {id} does not exist")))?;
        if raw.status != rapport_store::raw_events::PENDING {
            return Ok(()); // processed (or dead) already: a redelivery
        }
        let ch = channel::Entity::find_by_id(raw.channel_id)
            .one(&self.db)
            .await?
            .ok_or_else(|| Permanent("channel of the raw event is gone".into()))?;
        let kind = ChannelKind::parse(&ch.kind).map_err(|e| Permanent(e.to_string()))?;
        let inbound = match ingest::parse(kind, &raw.body, &ch.external_account_id, raw.created_at)
        {
            Ok(m) => m,
            Err(e) => {
                // Retrying cannot fix a payload: it is a dead letter now.
                self.mark_failed(raw.id, &e.to_string()).await?;
                metrics::counter!("rapport_ingest_unparseable_total").increment(1);
                return Ok(());
            }
        };
        let txn = begin_rederivable_for_agency(&self.db, raw.agency_id).await?;
        // The channel's own workspace (even archived: nothing is dropped),
        // and for keyword-routed sources every active one of the agency.
        let own = workspace::Column::Id.eq(ch.workspace_id);
        let workspaces = workspace::Entity::find()
            .filter(workspace::Column::AgencyId.eq(raw.agency_id))
            .filter(if kind.routes_by_keywords() {
                Condition::any()
                    .add(own)
                    .add(workspace::Column::ArchivedAt.is_null())
            } else {
                Condition::all().add(own)
            })
            .all(&txn)
            .await?;
        let items: Vec<_> = inbound
            .iter()
            .flat_map(|m| {
                targets(kind, &ch, &workspaces, &m.text)
                    .into_iter()
                    .map(move |ws| (ws, m))
            })
            .collect();
        let stored = store_batch(&txn, &ch, kind, &items).await?;
        // Conditional: of two workers racing on one event, one commits.
        let done = raw_event::Entity::update_many()
            .col_expr(raw_event::Column::Status, Expr::value(PROCESSED))
            .col_expr(raw_event::Column::ProcessedAt, Expr::value(Utc::now()))
            .filter(raw_event::Column::Id.eq(raw.id))
            .filter(raw_event::Column::Status.eq(rapport_store::raw_events::PENDING))
            .exec(&txn)
            .await?;
        if done.rows_affected != 1 {
            return Ok(()); // dropped: rolls back; someone else did it
        }
        txn.commit().await.context("committing an ingested event")?;
        metrics::counter!("rapport_messages_ingested_total").increment(stored.touched.len() as u64);
        announce(&self.kv, &stored.timers, &stored.touched).await;
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
