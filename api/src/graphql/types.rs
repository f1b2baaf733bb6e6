//! GraphQL object types: thin wrappers over stored rows.

use super::state;
use crate::auth::viewer::Auth;
use crate::error::{ApiError, ApiResult};
use async_graphql::{Context, Enum, ID, Json, Object};
use chrono::{DateTime, Utc};
use rapport_domain::reply::settings::{DuplicateWindow, SimilarityThreshold};
use rapport_domain::{GlobalId, Kind};
use rapport_store::entities::{
    agency, audit_entry, membership, membership_workspace, user, workspace,
};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

pub fn gid(kind: Kind, id: Uuid) -> ID {
    ID(GlobalId::encode(kind, id))
}

/// Decodes a client-supplied ID of `kind`; anything else is NOT_FOUND,
/// exactly like an ID that does not exist.
pub fn decode(kind: Kind, id: &ID) -> ApiResult<Uuid> {
    GlobalId::decode(kind, id.as_str()).ok_or(ApiError::NotFound)
}

/// A member's role in the agency, from most to least powerful.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "Role")]
pub enum GqlRole {
    /// Full control, including granting OWNER; an agency always keeps one.
    Owner,
    /// Manages workspaces, members, channels and settings.
    Admin,
    /// Works the inbox; may be restricted to listed workspaces.
    Agent,
    /// Read-only access to listed workspaces.
    ClientViewer,
}

impl From<rapport_domain::Role> for GqlRole {
    fn from(r: rapport_domain::Role) -> Self {
        use rapport_domain::Role::*;
        match r {
            Owner => GqlRole::Owner,
            Admin => GqlRole::Admin,
            Agent => GqlRole::Agent,
            ClientViewer => GqlRole::ClientViewer,
        }
    }
}

impl From<GqlRole> for rapport_domain::Role {
    fn from(r: GqlRole) -> Self {
        use rapport_domain::Role::*;
        match r {
            GqlRole::Owner => Owner,
            GqlRole::Admin => Admin,
            GqlRole::Agent => Agent,
            GqlRole::ClientViewer => ClientViewer,
        }
    }
}

pub fn stored_role(raw: &str) -> ApiResult<GqlRole> {
    rapport_domain::Role::parse(raw)
        .map(Into::into)
        .map_err(ApiError::internal)
}

pub struct Agency(pub agency::Model);

/// The tenant: an agency whose members handle the social inboxes of its
/// client brands (workspaces).
#[Object]
impl Agency {
    /// Global ID of the agency.
    async fn id(&self) -> ID {
        gid(Kind::Agency, self.0.id)
    }
    /// The agency's name, as given at sign-up.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// When the agency signed up.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

pub struct User(pub user::Model);

/// A person's account. One user may be a member of several agencies.
#[Object]
impl User {
    /// Global ID of the user.
    async fn id(&self) -> ID {
        gid(Kind::User, self.0.id)
    }
    /// The e-mail address the user signs in with. FORBIDDEN to a
    /// CLIENT_VIEWER for anyone but themselves: a client sees who handles
    /// a conversation by name, not the agency's staff addresses.
    async fn email(&self, ctx: &Context<'_>) -> ApiResult<&str> {
        if let Auth::Member(v) = super::auth(ctx)
            && v.role == rapport_domain::role::Role::ClientViewer
            && v.user_id != self.0.id
        {
            return Err(ApiError::Forbidden(
                "a CLIENT_VIEWER sees staff names, not their e-mail addresses",
            ));
        }
        Ok(&self.0.email)
    }
    /// The user's display name.
    async fn name(&self) -> &str {
        &self.0.name
    }
}

/// A member's user, read through `conn` (a request's transaction when it
/// has one, so that it needs no second pooled connection).
pub async fn load_user<C: sea_orm::ConnectionTrait>(conn: &C, id: Uuid) -> ApiResult<user::Model> {
    user::Entity::find_by_id(id)
        .one(conn)
        .await?
        .ok_or_else(|| ApiError::internal(format!("user {id} of a membership is missing")))
}

pub struct Workspace(pub workspace::Model);

pub fn strings(v: &serde_json::Value) -> Vec<String> {
    serde_json::from_value(v.clone()).unwrap_or_default()
}

/// A client brand of the agency: its channels, conversations, SLA policies
/// and reply settings.
#[Object]
impl Workspace {
    /// Global ID of the workspace.
    async fn id(&self) -> ID {
        gid(Kind::Workspace, self.0.id)
    }
    /// The workspace's name, usually the client brand's.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// IANA time zone, e.g. `Europe/Berlin`.
    async fn timezone(&self) -> &str {
        &self.0.timezone
    }
    /// Words and names that identify the client brand in mentions.
    async fn brand_keywords(&self) -> Vec<String> {
        strings(&self.0.brand_keywords)
    }
    /// Phrases a reply to this brand's customers must never contain.
    async fn banned_phrases(&self) -> Vec<String> {
        strings(&self.0.banned_phrases)
    }
    /// Words that raise a message's priority; empty means Rapport's defaults.
    async fn urgency_keywords(&self) -> Vec<String> {
        strings(&self.0.urgency_keywords)
    }
    /// Canned-reply guard: similarity from which a reply counts as a repeat.
    async fn similarity_threshold(&self) -> f64 {
        SimilarityThreshold::stored(self.0.similarity_threshold).get()
    }
    /// Canned-reply guard: days of earlier replies compared.
    async fn duplicate_window_days(&self) -> i32 {
        DuplicateWindow::stored(self.0.duplicate_window_days).days() as i32
    }
    /// Whether the workspace is archived (see `archiveWorkspace`).
    async fn archived(&self) -> bool {
        self.0.archived_at.is_some()
    }
    /// When the workspace was archived; null while it is active.
    async fn archived_at(&self) -> Option<DateTime<Utc>> {
        self.0.archived_at
    }
    /// When the workspace was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When the workspace was last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

pub struct Member(pub membership::Model);

/// A user's membership of the agency, with a role; also a pending invitation.
#[Object]
impl Member {
    /// Global ID of the membership (not of the user).
    async fn id(&self) -> ID {
        gid(Kind::Member, self.0.id)
    }
    /// The person's account. While the invitation is pending it reads as
    /// the invited address alone, whether or not the address had an
    /// account before: its name is the e-mail address and its id is
    /// provisional (the account's own id once accepted). The member list
    /// must not tell whether an address has an account, nor reveal a name
    /// given in another agency (an account's id dates its creation).
    async fn user(&self, ctx: &Context<'_>) -> ApiResult<User> {
        let mut u = load_user(&state(ctx).db, self.0.user_id).await?;
        if self.0.invitation_hash.is_some() {
            u.name = u.email.clone();
            u.id = self.0.id;
        }
        Ok(User(u))
    }
    /// The member's role in this agency.
    async fn role(&self) -> ApiResult<GqlRole> {
        stored_role(&self.0.role)
    }
    /// True until the invited person accepts.
    async fn invitation_pending(&self) -> bool {
        self.0.invitation_hash.is_some()
    }
    /// The only workspaces this member may see; null means all of the
    /// agency's. Lists only those the viewer may see too (at most 500).
    #[graphql(complexity = "super::LIST_COST * child_complexity")]
    async fn restricted_to_workspaces(
        &self,
        ctx: &Context<'_>,
    ) -> ApiResult<Option<Vec<Workspace>>> {
        if !self.0.restricted {
            return Ok(None);
        }
        let db = &state(ctx).db;
        // Through the viewer's scope: a member restricted to some brands
        // must not learn the others' names and settings from a colleague.
        let scope = &super::auth(ctx).viewer()?.scope;
        let ids: Vec<Uuid> = scope
            .select_in_workspaces::<membership_workspace::Entity>()
            .filter(membership_workspace::Column::MembershipId.eq(self.0.id))
            .all(db)
            .await?
            .into_iter()
            .map(|m| m.workspace_id)
            .collect();
        let rows = scope
            .select_in_workspaces::<workspace::Entity>()
            .filter(workspace::Column::Id.is_in(ids))
            .order_by_asc(workspace::Column::Name)
            .limit(super::MAX_LISTED)
            .all(db)
            .await?;
        Ok(Some(rows.into_iter().map(Workspace).collect()))
    }
    /// When the member was invited (or, for the founding OWNER, signed up).
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

pub struct AuditEntry(pub audit_entry::Model);

/// One recorded action in the agency's audit log.
#[Object]
impl AuditEntry {
    /// Global ID of the entry.
    async fn id(&self) -> ID {
        gid(Kind::AuditEntry, self.0.id)
    }
    /// Who did it; null for system actions or deleted users.
    async fn actor(&self, ctx: &Context<'_>) -> ApiResult<Option<User>> {
        match self.0.actor_user_id {
            None => Ok(None),
            Some(id) => Ok(user::Entity::find_by_id(id)
                .one(&state(ctx).db)
                .await?
                .map(User)),
        }
    }
    /// The mutation, e.g. `createWorkspace`.
    async fn action(&self) -> &str {
        &self.0.action
    }
    /// ID of the workspace the action concerned; null for agency-wide actions.
    async fn workspace_id(&self) -> Option<ID> {
        self.0.workspace_id.map(|id| gid(Kind::Workspace, id))
    }
    /// GraphQL type of the object acted on (e.g. `Workspace`, `Member`);
    /// null when there is none.
    async fn target_type(&self) -> Option<&str> {
        self.0.target_type.as_deref()
    }
    /// Global ID of the object acted on; null when there is none or when
    /// its type is not one of `Workspace`, `Member`, `Agency` or `User`.
    async fn target_id(&self) -> Option<ID> {
        let kind = match self.0.target_type.as_deref()? {
            "Workspace" => Kind::Workspace,
            "Member" => Kind::Member,
            "Agency" => Kind::Agency,
            "User" => Kind::User,
            _ => return None,
        };
        self.0.target_id.map(|id| gid(kind, id))
    }
    /// What changed, as JSON.
    async fn details(&self) -> Json<serde_json::Value> {
        Json(self.0.details.clone())
    }
    /// When it happened.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}
