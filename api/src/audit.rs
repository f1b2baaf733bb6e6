//! The audit log: one row per mutation (who, what, which workspace, when),
//! written in the mutation's own transaction so it commits or rolls back
//! with the change it describes.

use crate::auth::viewer::Viewer;
use crate::error::ApiResult;
use chrono::Utc;
use rapport_store::entities::audit_entry;
use sea_orm::{ActiveModelTrait, ConnectionTrait, Set};
use serde_json::Value;
use uuid::Uuid;

pub struct AuditEvent {
    action: &'static str,
    workspace_id: Option<Uuid>,
    target: Option<(&'static str, Uuid)>,
    details: Value,
}

impl AuditEvent {
    pub fn new(action: &'static str) -> Self {
        Self {
            action,
            workspace_id: None,
            target: None,
            details: Value::Object(Default::default()),
        }
    }

    pub fn workspace(mut self, id: Uuid) -> Self {
        self.workspace_id = Some(id);
        self
    }

    pub fn target(mut self, kind: &'static str, id: Uuid) -> Self {
        self.target = Some((kind, id));
        self
    }

    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// Records what the signed-in member `v` did.
    pub async fn by<C: ConnectionTrait>(self, conn: &C, v: &Viewer) -> ApiResult<()> {
        self.record(conn, v.agency_id, Some(v.user_id)).await
    }

    pub async fn record<C: ConnectionTrait>(
        self,
        conn: &C,
        agency_id: Uuid,
        actor_user_id: Option<Uuid>,
    ) -> ApiResult<()> {
        audit_entry::ActiveModel {
            id: Set(Uuid::now_v7()),
            agency_id: Set(agency_id),
            actor_user_id: Set(actor_user_id),
            workspace_id: Set(self.workspace_id),
            action: Set(self.action.to_string()),
            target_type: Set(self.target.map(|t| t.0.to_string())),
            target_id: Set(self.target.map(|t| t.1)),
            details: Set(self.details),
            created_at: Set(Utc::now()),
        }
        .insert(conn)
        .await?;
        tracing::info!(
            action = self.action,
            agency = %agency_id,
            actor = ?actor_user_id,
            workspace = ?self.workspace_id,
            "audit"
        );
        Ok(())
    }
}
