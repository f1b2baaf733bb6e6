//! Who is asking: the bearer token checked against its session and the
//! member's current role and workspace restriction. Role changes, removals
//! and logouts take effect on the next request, not when the token expires.

use super::sessions;
use super::tokens::Claims;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use chrono::Utc;
use rapport_domain::Role;
use rapport_store::entities::{membership, membership_workspace, session};
use rapport_store::{Scope, WorkspaceAccess};
use sea_orm::{ColumnTrait, EntityTrait, JoinType, QueryFilter, QuerySelect};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct Viewer {
    pub user_id: Uuid,
    pub agency_id: Uuid,
    pub membership_id: Uuid,
    pub session_id: Uuid,
    pub role: Role,
    pub scope: Scope,
}

/// The outcome of reading the Authorization header, kept per request.
#[derive(Debug, Clone)]
pub enum Auth {
    Anonymous,
    Invalid,
    Member(Box<Viewer>),
}

impl Auth {
    pub fn viewer(&self) -> ApiResult<&Viewer> {
        match self {
            Auth::Member(v) => Ok(v),
            Auth::Anonymous => Err(ApiError::Unauthenticated(
                "sign in: send an access token as `Authorization: Bearer <token>`",
            )),
            Auth::Invalid => Err(ApiError::Unauthenticated(
                "access token is invalid, expired or revoked",
            )),
        }
    }
}

impl Viewer {
    pub fn require_manager(&self) -> ApiResult<()> {
        if self.role.is_manager() {
            Ok(())
        } else {
            Err(ApiError::Forbidden("this needs the OWNER or ADMIN role"))
        }
    }

    pub fn require_writer(&self) -> ApiResult<()> {
        if self.role.can_write() {
            Ok(())
        } else {
            Err(ApiError::Forbidden("client viewers have read-only access"))
        }
    }
}

pub async fn authenticate(state: &AppState, header: Option<&str>) -> ApiResult<Auth> {
    authenticate_bearer(state, bearer(state, header)).await
}

/// The Authorization header, its token's signature and expiry checked
/// (no database read yet).
pub enum Bearer {
    Missing,
    Bad,
    Signed(Claims),
}

pub fn bearer(state: &AppState, header: Option<&str>) -> Bearer {
    let Some(header) = header else {
        return Bearer::Missing;
    };
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .unwrap_or("")
        .trim();
    state.jwt.verify(token).map_or(Bearer::Bad, Bearer::Signed)
}

/// [`authenticate`] from a header already read with [`bearer`].
pub async fn authenticate_bearer(state: &AppState, bearer: Bearer) -> ApiResult<Auth> {
    let claims = match bearer {
        Bearer::Missing => return Ok(Auth::Anonymous),
        Bearer::Bad => return Ok(Auth::Invalid),
        Bearer::Signed(c) => c,
    };
    Ok(load(state, claims.sub, claims.agency, claims.sid)
        .await?
        .map_or(Auth::Invalid, |v| Auth::Member(Box::new(v))))
}

/// The member as they are now, for a connection that outlives its access
/// token (a live subscription): None once the session is revoked or ended
/// or the membership is gone.
pub async fn reload(state: &AppState, v: &Viewer) -> ApiResult<Option<Viewer>> {
    load(state, v.user_id, v.agency_id, v.session_id).await
}

/// The member `user` of `agency` signed in through `session_id`, if both
/// still hold.
async fn load(
    state: &AppState,
    user: Uuid,
    agency: Uuid,
    session_id: Uuid,
) -> ApiResult<Option<Viewer>> {
    // The member and the token's session in one round trip: every request
    // pays for this check.
    let by_user = membership::Entity::belongs_to(session::Entity)
        .from(membership::Column::UserId)
        .to(session::Column::UserId)
        .into();
    let Some((m, Some(s))) = membership::Entity::find()
        .join(JoinType::InnerJoin, by_user)
        .select_also(session::Entity)
        .filter(membership::Column::AgencyId.eq(agency))
        .filter(membership::Column::UserId.eq(user))
        .filter(session::Column::Id.eq(session_id))
        .one(&state.db)
        .await?
    else {
        return Ok(None);
    };
    if s.revoked_at.is_some() || s.agency_id != agency || s.expires_at <= Utc::now() {
        return Ok(None);
    }
    if !sessions::belongs_to(&s, &m) {
        return Ok(None);
    }
    let role = Role::parse(&m.role).map_err(ApiError::internal)?;
    let workspaces = if m.restricted {
        let ids = membership_workspace::Entity::find()
            .filter(membership_workspace::Column::MembershipId.eq(m.id))
            .all(&state.db)
            .await?
            .into_iter()
            .map(|mw| mw.workspace_id)
            .collect();
        WorkspaceAccess::Only(ids)
    } else {
        WorkspaceAccess::All
    };
    Ok(Some(Viewer {
        user_id: user,
        agency_id: agency,
        membership_id: m.id,
        session_id,
        role,
        scope: Scope {
            agency_id: agency,
            workspaces,
        },
    }))
}
