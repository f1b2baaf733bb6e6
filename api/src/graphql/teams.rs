//! Teams: named groups of members. An SLA policy's escalation can assign a
//! breached conversation to the least-loaded member of a team.

use super::types::{Member, decode, gid};
use super::{auth, state};
use crate::audit::AuditEvent;
use crate::auth::viewer::Viewer;
use crate::error::{ApiError, ApiResult};
use async_graphql::{Context, ID, InputObject, Object};
use chrono::{DateTime, Utc};
use rapport_domain::{Kind, Name};
use rapport_store::entities::{membership, team, team_member};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseTransaction, EntityTrait, IntoActiveModel, ModelTrait,
    QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde_json::json;
use uuid::Uuid;

/// Most members one team may have.
const MAX_MEMBERS: usize = 200;

pub struct Team(pub team::Model);

/// A named group of the agency's members; an SLA policy's escalation can
/// assign a breached conversation to its least-loaded member.
#[Object]
impl Team {
    /// Global ID of the team.
    async fn id(&self) -> ID {
        gid(Kind::Team, self.0.id)
    }
    /// The team's name, unique in the agency.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Oldest member first; only those the viewer may see (see `members`).
    #[graphql(complexity = "super::FEW_COST * child_complexity")]
    async fn members(&self, ctx: &Context<'_>) -> ApiResult<Vec<Member>> {
        let v = auth(ctx).viewer()?;
        let db = &state(ctx).db;
        let ids: Vec<Uuid> = v
            .scope
            .select::<team_member::Entity>()
            .select_only()
            .column(team_member::Column::MembershipId)
            .filter(team_member::Column::TeamId.eq(self.0.id))
            .into_tuple()
            .all(db)
            .await?;
        Ok(v.scope
            .select_members()
            .filter(membership::Column::Id.is_in(ids))
            .order_by_asc(membership::Column::CreatedAt)
            .all(db)
            .await?
            .into_iter()
            .map(Member)
            .collect())
    }
    /// When the team was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When the team was last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

/// A new team.
#[derive(InputObject)]
pub struct CreateTeamInput {
    /// The team's name, unique in the agency.
    name: String,
    /// The team's members (at most 200).
    #[graphql(default)]
    member_ids: Vec<ID>,
}

/// Only the fields given change; `memberIds` replaces the members.
#[derive(InputObject)]
pub struct UpdateTeamInput {
    /// The team to change.
    id: ID,
    /// New name.
    name: Option<String>,
    /// The new member list (at most 200), replacing the old one.
    member_ids: Option<Vec<ID>>,
}

/// The team to delete.
#[derive(InputObject)]
pub struct DeleteTeamInput {
    /// The team's ID.
    id: ID,
}

/// The agency's members named by `ids`, deduplicated; another agency's or
/// an unknown ID is NOT_FOUND.
async fn members_named(v: &Viewer, txn: &DatabaseTransaction, ids: &[ID]) -> ApiResult<Vec<Uuid>> {
    if ids.len() > MAX_MEMBERS {
        return Err(ApiError::bad_input(
            "memberIds",
            format!("at most {MAX_MEMBERS} members"),
        ));
    }
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let m = v
            .scope
            .find::<membership::Entity, _>(txn, decode(Kind::Member, id)?)
            .await?;
        if !out.contains(&m.id) {
            out.push(m.id);
        }
    }
    Ok(out)
}

async fn set_members(
    v: &Viewer,
    txn: &DatabaseTransaction,
    team: Uuid,
    members: &[Uuid],
) -> ApiResult<()> {
    team_member::Entity::delete_many()
        .filter(team_member::Column::AgencyId.eq(v.agency_id))
        .filter(team_member::Column::TeamId.eq(team))
        .exec(txn)
        .await?;
    if members.is_empty() {
        return Ok(());
    }
    let now = Utc::now();
    team_member::Entity::insert_many(members.iter().map(|m| team_member::ActiveModel {
        id: Set(Uuid::now_v7()),
        agency_id: Set(v.agency_id),
        team_id: Set(team),
        membership_id: Set(*m),
        created_at: Set(now),
    }))
    .exec_without_returning(txn)
    .await?;
    Ok(())
}

#[derive(Default)]
pub struct TeamQuery;

#[Object]
impl TeamQuery {
    /// The agency's teams, by name.
    #[graphql(complexity = "super::LIST_COST * child_complexity")]
    async fn teams(&self, ctx: &Context<'_>) -> ApiResult<Vec<Team>> {
        let v = auth(ctx).viewer()?;
        v.require_writer()?;
        Ok(v.scope
            .select::<team::Entity>()
            .order_by_asc(team::Column::Name)
            .limit(super::MAX_LISTED)
            .all(&state(ctx).db)
            .await?
            .into_iter()
            .map(Team)
            .collect())
    }
}

#[derive(Default)]
pub struct TeamMutation;

#[Object]
impl TeamMutation {
    /// OWNER or ADMIN. Names are unique in the agency.
    async fn create_team(&self, ctx: &Context<'_>, input: CreateTeamInput) -> ApiResult<Team> {
        let v = auth(ctx).viewer()?;
        v.require_manager()?;
        let name = Name::parse("name", &input.name)?;
        let txn = v.scope.begin(&state(ctx).db).await?;
        let members = members_named(v, &txn, &input.member_ids).await?;
        let now = Utc::now();
        let t = team::ActiveModel {
            id: Set(Uuid::now_v7()),
            agency_id: Set(v.agency_id),
            name: Set(name.into_string()),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await?;
        set_members(v, &txn, t.id, &members).await?;
        AuditEvent::new("createTeam")
            .target("Team", t.id)
            .details(json!({ "name": t.name, "members": members.len() }))
            .by(&txn, v)
            .await?;
        txn.commit().await?;
        Ok(Team(t))
    }

    /// OWNER or ADMIN.
    async fn update_team(&self, ctx: &Context<'_>, input: UpdateTeamInput) -> ApiResult<Team> {
        let v = auth(ctx).viewer()?;
        v.require_manager()?;
        let txn = v.scope.begin(&state(ctx).db).await?;
        let t = v
            .scope
            .find::<team::Entity, _>(&txn, decode(Kind::Team, &input.id)?)
            .await?;
        let mut am = t.into_active_model();
        if let Some(n) = &input.name {
            am.name = Set(Name::parse("name", n)?.into_string());
        }
        am.updated_at = Set(Utc::now());
        let t = am.update(&txn).await?;
        if let Some(ids) = &input.member_ids {
            let members = members_named(v, &txn, ids).await?;
            set_members(v, &txn, t.id, &members).await?;
        }
        AuditEvent::new("updateTeam")
            .target("Team", t.id)
            .by(&txn, v)
            .await?;
        txn.commit().await?;
        Ok(Team(t))
    }

    /// OWNER or ADMIN. Policies escalating to it stop assigning.
    async fn delete_team(&self, ctx: &Context<'_>, input: DeleteTeamInput) -> ApiResult<ID> {
        let v = auth(ctx).viewer()?;
        v.require_manager()?;
        let txn = v.scope.begin(&state(ctx).db).await?;
        let t = v
            .scope
            .find::<team::Entity, _>(&txn, decode(Kind::Team, &input.id)?)
            .await?;
        let id = t.id;
        t.delete(&txn).await?;
        AuditEvent::new("deleteTeam")
            .target("Team", id)
            .by(&txn, v)
            .await?;
        txn.commit().await?;
        Ok(gid(Kind::Team, id))
    }
}
