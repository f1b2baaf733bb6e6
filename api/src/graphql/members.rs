//! Members of the agency: invitations, roles, workspace restrictions, removal.

use super::paging::{Order, keyset};
use super::types::{Member, decode};
use super::{auth, state};
use crate::audit::AuditEvent;
use crate::auth::sessions;
use crate::auth::tokens::{random_token, token_hash};
use crate::auth::viewer::Viewer;
use crate::error::{ApiError, ApiResult};
use async_graphql::connection::Connection;
use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use chrono::Utc;
use rapport_domain::{Email, Kind, Name, PageRequest, Role};
use rapport_store::entities::{membership, membership_workspace, user};
use rapport_store::locks;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseTransaction, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, Set,
};
use serde_json::json;
use uuid::Uuid;

use super::types::GqlRole;

/// Who to invite, with which role and workspace restriction.
#[derive(InputObject)]
pub struct InviteMemberInput {
    /// The person's e-mail address; an existing account with it is reused.
    email: String,
    /// The person's display name (used when a new account is created).
    name: String,
    /// The role to grant. Only an OWNER may grant OWNER.
    role: GqlRole,
    /// Restrict the member to these workspaces. Required for CLIENT_VIEWER,
    /// optional for AGENT, not allowed for OWNER and ADMIN.
    workspace_ids: Option<Vec<ID>>,
}

/// A member's new role and workspace restriction.
#[derive(InputObject)]
pub struct UpdateMemberRoleInput {
    /// The member to change.
    member_id: ID,
    /// The new role.
    role: GqlRole,
    /// As in `inviteMember`; null lifts the restriction where the role allows.
    workspace_ids: Option<Vec<ID>>,
}

/// The member to remove.
#[derive(InputObject)]
pub struct RemoveMemberInput {
    /// The member to remove.
    member_id: ID,
}

/// The new, pending member and the token that accepts the invitation.
#[derive(SimpleObject)]
pub struct InviteMemberPayload {
    /// The new member; `invitationPending` is true until accepted.
    member: Member,
    /// Give this to the invited person; they call `acceptInvitation` with it.
    /// Shown only once.
    invitation_token: String,
}

/// Result of `removeMember`.
#[derive(SimpleObject)]
pub struct RemoveMemberPayload {
    /// ID of the member that was removed.
    removed_member_id: ID,
}

#[derive(Default)]
pub struct MemberQuery;

#[Object]
impl MemberQuery {
    /// The agency's members, oldest first; for a member restricted to some
    /// workspaces, the agency's staff and the members of those workspaces.
    /// Not for CLIENT_VIEWER.
    // A page costs its size times what each node asks for.
    #[graphql(complexity = "first.unwrap_or(20).clamp(0, 100) as usize * child_complexity")]
    async fn members(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, Member>> {
        let v = auth(ctx).viewer()?;
        v.require_writer()?;
        let page = PageRequest::parse(first, after.as_deref())?;
        let txn = v.scope.begin(&state(ctx).db).await?;
        let conn = keyset(
            &txn,
            v.scope.select_members(),
            membership::Column::Id,
            page,
            Order::OldestFirst,
            |m| m.id,
            Member,
        )
        .await?;
        txn.commit().await?;
        Ok(conn)
    }

    /// One member of the agency by ID (one `members` lists); NOT_FOUND when
    /// there is none. Not for CLIENT_VIEWER.
    async fn member(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Member> {
        let v = auth(ctx).viewer()?;
        v.require_writer()?;
        let id = decode(Kind::Member, &id)?;
        let txn = v.scope.begin(&state(ctx).db).await?;
        let m = v.scope.member(&txn, id).await?;
        txn.commit().await?;
        Ok(Member(m))
    }
}

/// Checks the restriction list against the role and resolves each ID to a
/// workspace of this agency. `None`: unrestricted.
/// Unassigns `m`'s open conversations they can no longer answer after a
/// role change: all of them for a CLIENT_VIEWER, those outside `workspaces`
/// for a restricted member. Returns (workspace, conversation) of each, to
/// publish once committed.
async fn unassign_out_of_reach(
    txn: &DatabaseTransaction,
    m: &membership::Model,
    role: Role,
    workspaces: Option<&[Uuid]>,
) -> ApiResult<Vec<(Uuid, Uuid)>> {
    use rapport_store::entities::conversation;
    use rapport_store::ingest::{OPEN, PENDING_CUSTOMER};
    use sea_orm::QuerySelect;
    use sea_orm::sea_query::Expr;
    let mut q = conversation::Entity::find()
        .filter(conversation::Column::AgencyId.eq(m.agency_id))
        .filter(conversation::Column::AssigneeMembershipId.eq(m.id))
        .filter(conversation::Column::Status.is_in([OPEN, PENDING_CUSTOMER]));
    match (role, workspaces) {
        (Role::ClientViewer, _) => {}
        (_, Some(ids)) => {
            q = q.filter(conversation::Column::WorkspaceId.is_not_in(ids.iter().copied()))
        }
        (_, None) => return Ok(Vec::new()),
    }
    let out: Vec<(Uuid, Uuid)> = q
        .select_only()
        .column(conversation::Column::WorkspaceId)
        .column(conversation::Column::Id)
        .into_tuple()
        .all(txn)
        .await?;
    for chunk in out.chunks(500) {
        conversation::Entity::update_many()
            .col_expr(
                conversation::Column::AssigneeMembershipId,
                Expr::value(Option::<Uuid>::None),
            )
            .col_expr(conversation::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(conversation::Column::Id.is_in(chunk.iter().map(|(_, c)| *c)))
            // Still theirs: one reassigned since it was read keeps its new
            // assignee.
            .filter(conversation::Column::AssigneeMembershipId.eq(m.id))
            .exec(txn)
            .await?;
    }
    Ok(out)
}

async fn restriction(
    v: &Viewer,
    txn: &DatabaseTransaction,
    role: Role,
    ids: Option<&[ID]>,
) -> ApiResult<Option<Vec<Uuid>>> {
    match (ids, role) {
        (None, Role::ClientViewer) => Err(ApiError::bad_input(
            "workspaceIds",
            "a CLIENT_VIEWER must be restricted to listed workspaces",
        )),
        (None, _) => Ok(None),
        (Some(_), r) if !r.may_be_restricted() => Err(ApiError::bad_input(
            "workspaceIds",
            "OWNER and ADMIN always see every workspace",
        )),
        (Some(ids), _) => {
            if ids.len() > 1_000 {
                return Err(ApiError::bad_input("workspaceIds", "at most 1000 entries"));
            }
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let w = v.scope.workspace(txn, decode(Kind::Workspace, id)?).await?;
                if !out.contains(&w.id) {
                    out.push(w.id);
                }
            }
            Ok(Some(out))
        }
    }
}

async fn set_restriction(
    txn: &DatabaseTransaction,
    m: &membership::Model,
    ids: &Option<Vec<Uuid>>,
) -> ApiResult<()> {
    membership_workspace::Entity::delete_many()
        .filter(membership_workspace::Column::AgencyId.eq(m.agency_id))
        .filter(membership_workspace::Column::MembershipId.eq(m.id))
        .exec(txn)
        .await?;
    for ws in ids.iter().flatten() {
        membership_workspace::ActiveModel {
            agency_id: Set(m.agency_id),
            membership_id: Set(m.id),
            workspace_id: Set(*ws),
        }
        .insert(txn)
        .await?;
    }
    Ok(())
}

/// Refuses a change that would leave the agency without an owner who has
/// accepted (an invitation may never be accepted). The owners' rows are
/// locked, so two owners demoting each other at once are taken one after
/// the other and the second sees the first's change.
/// The member `id` and the agency's owners, locked together in one
/// statement in id order (so two changes cannot deadlock): the checks that
/// follow read them as they are now, after any concurrent change committed,
/// not as they were (an ADMIN demoting someone an OWNER is promoting at the
/// same moment would otherwise act on the old role).
async fn lock_member(
    v: &Viewer,
    txn: &DatabaseTransaction,
    id: Uuid,
) -> ApiResult<(membership::Model, Vec<membership::Model>)> {
    let rows = locks::for_update(
        v.scope
            .select::<membership::Entity>()
            .filter(
                sea_orm::Condition::any()
                    .add(membership::Column::Id.eq(id))
                    .add(membership::Column::Role.eq(Role::Owner.as_str())),
            )
            .order_by_asc(membership::Column::Id),
    )
    .all(txn)
    .await?;
    let current = rows
        .iter()
        .find(|m| m.id == id)
        .cloned()
        .ok_or(ApiError::NotFound)?;
    let owners = rows
        .into_iter()
        .filter(|m| m.role == Role::Owner.as_str())
        .collect();
    Ok((current, owners))
}

/// The agency keeps an accepted OWNER: `current` may not be removed or
/// demoted when no other owner (of `owners`, locked) has accepted.
fn keep_an_owner(
    owners: &[membership::Model],
    current: &membership::Model,
    new_role: Option<Role>,
) -> ApiResult<()> {
    if current.role != Role::Owner.as_str() || new_role == Some(Role::Owner) {
        return Ok(());
    }
    let others = owners
        .iter()
        .filter(|m| m.id != current.id && m.invitation_hash.is_none())
        .count();
    if others == 0 {
        return Err(ApiError::bad_input(
            "memberId",
            "the agency's last OWNER cannot be removed or demoted",
        ));
    }
    Ok(())
}

fn stored(m: &membership::Model) -> ApiResult<Role> {
    Role::parse(&m.role).map_err(ApiError::internal)
}

#[derive(Default)]
pub struct MemberMutation;

#[Object]
impl MemberMutation {
    /// Invites a person (new or existing account) with a role. OWNER or ADMIN;
    /// only an OWNER may invite an OWNER.
    async fn invite_member(
        &self,
        ctx: &Context<'_>,
        input: InviteMemberInput,
    ) -> ApiResult<InviteMemberPayload> {
        let v = auth(ctx).viewer()?;
        v.require_manager()?;
        let role: Role = input.role.into();
        if !v.role.may_assign(None, role) {
            return Err(ApiError::Forbidden("only an OWNER may grant OWNER"));
        }
        let email = Email::parse(&input.email)?;
        let name = Name::parse("name", &input.name)?;
        let st = state(ctx);
        let txn = v.scope.begin(&st.db).await?;
        let ids = restriction(v, &txn, role, input.workspace_ids.as_deref()).await?;
        let now = Utc::now();
        let existing = user::Entity::find()
            .filter(user::Column::Email.eq(email.as_str()))
            .one(&txn)
            .await?;
        let user_id = match existing {
            Some(u) => u.id,
            None => {
                user::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    email: Set(email.as_str().to_string()),
                    name: Set(name.into_string()),
                    password_hash: Set(None),
                    created_at: Set(now),
                }
                .insert(&txn)
                .await?
                .id
            }
        };
        let token = random_token()?;
        let m = membership::ActiveModel {
            id: Set(Uuid::now_v7()),
            agency_id: Set(v.agency_id),
            user_id: Set(user_id),
            role: Set(role.as_str().to_string()),
            restricted: Set(ids.is_some()),
            invitation_hash: Set(Some(token_hash(&token))),
            accepted_at: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await?;
        set_restriction(&txn, &m, &ids).await?;
        AuditEvent::new("inviteMember")
            .target("Member", m.id)
            .details(json!({ "email": email.as_str(), "role": role.as_str(), "restricted": ids.is_some() }))
            .by(&txn, v)
            .await?;
        txn.commit().await?;
        Ok(InviteMemberPayload {
            member: Member(m),
            invitation_token: token,
        })
    }

    /// Changes a member's role and workspace restriction. OWNER or ADMIN;
    /// only an OWNER changes an OWNER or grants OWNER.
    async fn update_member_role(
        &self,
        ctx: &Context<'_>,
        input: UpdateMemberRoleInput,
    ) -> ApiResult<Member> {
        let v = auth(ctx).viewer()?;
        v.require_manager()?;
        let id = decode(Kind::Member, &input.member_id)?;
        let role: Role = input.role.into();
        let st = state(ctx);
        let txn = v.scope.begin(&st.db).await?;
        let (current, owners) = lock_member(v, &txn, id).await?;
        let before = stored(&current)?;
        if !v.role.may_assign(Some(before), role) {
            return Err(ApiError::Forbidden(
                "only an OWNER may change or grant OWNER",
            ));
        }
        keep_an_owner(&owners, &current, Some(role))?;
        let ids = restriction(v, &txn, role, input.workspace_ids.as_deref()).await?;
        let mut am = current.into_active_model();
        am.role = Set(role.as_str().to_string());
        am.restricted = Set(ids.is_some());
        am.updated_at = Set(Utc::now());
        let m = am.update(&txn).await?;
        set_restriction(&txn, &m, &ids).await?;
        let unassigned = unassign_out_of_reach(&txn, &m, role, ids.as_deref()).await?;
        AuditEvent::new("updateMemberRole")
            .target("Member", m.id)
            .details(json!({ "from": before.as_str(), "to": role.as_str(), "restricted": ids.is_some() }))
            .by(&txn, v)
            .await?;
        txn.commit().await?;
        for (ws, c) in unassigned {
            st.kv.conversation_changed(ws, c, "updated").await;
        }
        Ok(Member(m))
    }

    /// Removes a member and ends their sessions in this agency. OWNER or
    /// ADMIN; only an OWNER removes an OWNER; the last OWNER stays.
    async fn remove_member(
        &self,
        ctx: &Context<'_>,
        input: RemoveMemberInput,
    ) -> ApiResult<RemoveMemberPayload> {
        let v = auth(ctx).viewer()?;
        v.require_manager()?;
        let id = decode(Kind::Member, &input.member_id)?;
        let st = state(ctx);
        let txn = v.scope.begin(&st.db).await?;
        let (current, owners) = lock_member(v, &txn, id).await?;
        let before = stored(&current)?;
        if before == Role::Owner && v.role != Role::Owner {
            return Err(ApiError::Forbidden("only an OWNER may remove an OWNER"));
        }
        keep_an_owner(&owners, &current, None)?;
        membership::Entity::delete_by_id(current.id)
            .exec(&txn)
            .await?;
        // In the same transaction: a removal that commits has ended the
        // member's sessions too (their refresh tokens must not work again
        // if they are invited back).
        sessions::revoke_all(&txn, current.agency_id, current.user_id).await?;
        AuditEvent::new("removeMember")
            .target("Member", current.id)
            .details(json!({ "role": before.as_str() }))
            .by(&txn, v)
            .await?;
        txn.commit().await?;
        Ok(RemoveMemberPayload {
            removed_member_id: input.member_id,
        })
    }
}
