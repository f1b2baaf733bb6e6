//! Reading the audit log (OWNER and ADMIN).

use super::paging::{Order, keyset};
use super::types::{AuditEntry, decode};
use super::{auth, state};
use crate::error::ApiResult;
use async_graphql::connection::Connection;
use async_graphql::{Context, ID, Object};
use rapport_domain::{Kind, PageRequest};
use rapport_store::entities::audit_entry;
use sea_orm::{ColumnTrait, QueryFilter};

#[derive(Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    /// Every mutation in the agency, newest first; optionally one workspace's.
    // A page costs its size times what each node asks for.
    #[graphql(complexity = "first.unwrap_or(20).clamp(0, 100) as usize * child_complexity")]
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        workspace_id: Option<ID>,
    ) -> ApiResult<Connection<String, AuditEntry>> {
        let v = auth(ctx).viewer()?;
        v.require_manager()?;
        let page = PageRequest::parse(first, after.as_deref())?;
        let txn = v.scope.begin(&state(ctx).db).await?;
        let mut q = v.scope.select::<audit_entry::Entity>();
        if let Some(ws) = &workspace_id {
            let ws = v
                .scope
                .workspace(&txn, decode(Kind::Workspace, ws)?)
                .await?;
            q = q.filter(audit_entry::Column::WorkspaceId.eq(ws.id));
        }
        let conn = keyset(
            &txn,
            q,
            audit_entry::Column::Id,
            page,
            Order::NewestFirst,
            |e| e.id,
            AuditEntry,
        )
        .await?;
        txn.commit().await?;
        Ok(conn)
    }
}
