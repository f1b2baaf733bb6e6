//! Choosing who gets a conversation from a team: the least-loaded member.

use crate::entities::{conversation, membership, team_member};
use crate::errors::StoreResult;
use crate::tenancy::member_sees_workspace;
use sea_orm::sea_query::{Expr, Func};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};
use std::collections::HashMap;
use uuid::Uuid;

/// The team's member with the fewest open conversations (OPEN or
/// PENDING_CUSTOMER) assigned, among those who may answer in `workspace`:
/// accepted, not read-only, and seeing the workspace. Ties go to the member
/// who joined the agency first, so the choice is deterministic. When
/// `current` (the conversation's assignee) is one of them, it is kept: a
/// second breach must not take the conversation from whoever works on it
/// (its own count would weigh against them).
pub async fn least_loaded<C: ConnectionTrait>(
    conn: &C,
    agency_id: Uuid,
    team_id: Uuid,
    workspace: Uuid,
    current: Option<Uuid>,
) -> StoreResult<Option<Uuid>> {
    let ids: Vec<Uuid> = team_member::Entity::find()
        .select_only()
        .column(team_member::Column::MembershipId)
        .filter(team_member::Column::AgencyId.eq(agency_id))
        .filter(team_member::Column::TeamId.eq(team_id))
        .into_tuple()
        .all(conn)
        .await?;
    if ids.is_empty() {
        return Ok(None);
    }
    let mut candidates = Vec::new();
    for m in membership::Entity::find()
        .filter(membership::Column::AgencyId.eq(agency_id))
        .filter(membership::Column::Id.is_in(ids))
        .filter(membership::Column::InvitationHash.is_null())
        .filter(membership::Column::Role.ne("CLIENT_VIEWER"))
        .all(conn)
        .await?
    {
        if member_sees_workspace(conn, &m, workspace).await? {
            candidates.push((m.created_at, m.id));
        }
    }
    if candidates.is_empty() {
        return Ok(None);
    }
    if let Some(current) = current.filter(|c| candidates.iter().any(|(_, id)| id == c)) {
        return Ok(Some(current));
    }
    let load: HashMap<Uuid, i64> = conversation::Entity::find()
        .select_only()
        .column(conversation::Column::AssigneeMembershipId)
        .column_as(
            Expr::expr(Func::count(Expr::col(conversation::Column::Id))),
            "n",
        )
        .filter(conversation::Column::AgencyId.eq(agency_id))
        .filter(
            conversation::Column::AssigneeMembershipId.is_in(candidates.iter().map(|(_, id)| *id)),
        )
        .filter(conversation::Column::Status.is_in(["OPEN", "PENDING_CUSTOMER"]))
        .group_by(conversation::Column::AssigneeMembershipId)
        .into_tuple::<(Uuid, i64)>()
        .all(conn)
        .await?
        .into_iter()
        .collect();
    Ok(candidates
        .into_iter()
        .min_by_key(|(joined, id)| (load.get(id).copied().unwrap_or(0), *joined, *id))
        .map(|(_, id)| id))
}
