//! Login sessions and refresh-token rotation. A session is one refresh-token
//! family: each refresh replaces the stored hash (single use), and replaying
//! any already-used token of the family revokes the whole session, since
//! only a thief would hold an old one. A token names its session under a
//! MAC ([`super::tokens::JwtKeys::mint_refresh`]), so every spent token is
//! recognised, not only the last; tokens minted before that format are
//! recognised through `previous_hash` (the last one only).

use super::tokens::token_hash;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use chrono::{DateTime, Utc};
use rapport_store::entities::{membership, session};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use uuid::Uuid;

/// Tokens handed to the client after login, sign-up or refresh.
pub struct Issued {
    pub access_token: String,
    pub access_expires_at: DateTime<Utc>,
    pub refresh_token: String,
    pub session_id: Uuid,
}

const BAD_REFRESH: ApiError =
    ApiError::Unauthenticated("refresh token is invalid, expired, used or revoked");

/// The longest a session lasts from its sign-in, however often it is
/// refreshed: a refresh token kept fresh (by its owner or by a thief) does
/// not sign in for ever.
pub const MAX_SESSION_DAYS: i64 = 90;

/// When a refresh token issued now for a session begun at `begun` expires.
fn refresh_expiry(state: &AppState, begun: DateTime<Utc>) -> ApiResult<DateTime<Utc>> {
    let sliding = Utc::now()
        + chrono::Duration::from_std(state.settings.refresh_token_ttl)
            .map_err(ApiError::internal)?;
    Ok(sliding.min(begun + chrono::Duration::days(MAX_SESSION_DAYS)))
}

/// Opens a session for a member and issues its first pair of tokens.
pub async fn start(
    state: &AppState,
    agency_id: Uuid,
    user_id: Uuid,
    role: &str,
) -> ApiResult<Issued> {
    let now = Utc::now();
    let id = Uuid::now_v7();
    let refresh = state.jwt.mint_refresh(id)?;
    session::ActiveModel {
        id: Set(id),
        agency_id: Set(agency_id),
        user_id: Set(user_id),
        refresh_hash: Set(token_hash(&refresh)),
        previous_hash: Set(None),
        expires_at: Set(refresh_expiry(state, now)?),
        last_used_at: Set(now),
        revoked_at: Set(None),
        created_at: Set(now),
    }
    .insert(&state.db)
    .await?;
    let (access, exp) = state.jwt.issue(
        user_id,
        agency_id,
        role,
        id,
        state.settings.access_token_ttl,
    )?;
    Ok(Issued {
        access_token: access,
        access_expires_at: exp,
        refresh_token: refresh,
        session_id: id,
    })
}

/// A refresh token exchanged, not yet committed: the caller records and
/// answers within `txn`, then commits, so a refresh that fails after the
/// exchange (an audit write, loading the answer) leaves the old token
/// working, and the client's retry is not taken for a replay.
pub struct Rotated {
    pub session: session::Model,
    pub member: membership::Model,
    pub issued: Issued,
    pub txn: sea_orm::DatabaseTransaction,
}

/// Exchanges a refresh token for a new pair; the old one stops working
/// once `Rotated::txn` commits.
pub async fn rotate(state: &AppState, refresh_token: &str) -> ApiResult<Rotated> {
    let old_hash = token_hash(refresh_token.trim());
    let Some(sess) = session::Entity::find()
        .filter(session::Column::RefreshHash.eq(&old_hash))
        .one(&state.db)
        .await?
    else {
        // A token that was valid once and already rotated: theft. Revoke.
        let replayed = match state.jwt.refresh_session(refresh_token.trim()) {
            Some(sid) => Some(sid),
            None => session::Entity::find()
                .filter(session::Column::PreviousHash.eq(&old_hash))
                .one(&state.db)
                .await?
                .map(|s| s.id),
        };
        if let Some(sid) = replayed {
            replay(state, sid, &old_hash).await?;
        }
        return Err(BAD_REFRESH);
    };
    let now = Utc::now();
    if sess.revoked_at.is_some()
        || sess.expires_at <= now
        || sess.created_at + chrono::Duration::days(MAX_SESSION_DAYS) <= now
    {
        return Err(BAD_REFRESH);
    }
    let member = membership::Entity::find()
        .filter(membership::Column::AgencyId.eq(sess.agency_id))
        .filter(membership::Column::UserId.eq(sess.user_id))
        .one(&state.db)
        .await?
        .filter(|m| belongs_to(&sess, m))
        .ok_or(BAD_REFRESH)?;

    let refresh = state.jwt.mint_refresh(sess.id)?;
    let txn = rapport_store::tenancy::begin_for_agency(&state.db, sess.agency_id).await?;
    // Conditional on the old hash: of two concurrent refreshes with the same
    // token, exactly one wins (the other waits for its commit, then finds
    // the hash changed).
    let updated = session::Entity::update_many()
        .col_expr(
            session::Column::RefreshHash,
            Expr::value(token_hash(&refresh)),
        )
        .col_expr(session::Column::PreviousHash, Expr::value(old_hash.clone()))
        .col_expr(session::Column::LastUsedAt, Expr::value(Utc::now()))
        .col_expr(
            session::Column::ExpiresAt,
            Expr::value(refresh_expiry(state, sess.created_at)?),
        )
        .filter(session::Column::Id.eq(sess.id))
        .filter(session::Column::RefreshHash.eq(old_hash.clone()))
        .filter(session::Column::RevokedAt.is_null())
        .exec(&txn)
        .await?;
    if updated.rows_affected != 1 {
        // The same token spent by another refresh meanwhile (two tabs of
        // one client): refused, within the grace of a replay.
        drop(txn);
        replay(state, sess.id, &old_hash).await?;
        return Err(BAD_REFRESH);
    }
    let (access, exp) = state.jwt.issue(
        sess.user_id,
        sess.agency_id,
        &member.role,
        sess.id,
        state.settings.access_token_ttl,
    )?;
    let issued = Issued {
        access_token: access,
        access_expires_at: exp,
        refresh_token: refresh,
        session_id: sess.id,
    };
    Ok(Rotated {
        session: sess,
        member,
        issued,
        txn,
    })
}

/// A spent refresh token came back: only a thief would hold it, so the
/// session ends. Except the token spent last, within
/// `Settings::refresh_reuse_grace` of its rotation: two tabs of one client
/// refreshing at once, or a retry after a lost answer, is refused without
/// ending the session (the thief's token is refused all the same).
async fn replay(state: &AppState, session_id: Uuid, spent_hash: &str) -> ApiResult<()> {
    let grace = chrono::Duration::from_std(state.settings.refresh_reuse_grace)
        .map_err(ApiError::internal)?;
    let recent = session::Entity::find_by_id(session_id)
        .one(&state.db)
        .await?
        .is_some_and(|s| {
            s.previous_hash.as_deref() == Some(spent_hash) && s.last_used_at + grace > Utc::now()
        });
    if recent {
        tracing::info!(session = %session_id, "the last refresh token came back within the grace; refused");
        return Ok(());
    }
    tracing::warn!(session = %session_id, "refresh token replayed; revoking session");
    revoke(state, session_id).await
}

pub async fn revoke(state: &AppState, session_id: Uuid) -> ApiResult<()> {
    session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(Utc::now()))
        .filter(session::Column::Id.eq(session_id))
        .filter(session::Column::RevokedAt.is_null())
        .exec(&state.db)
        .await?;
    Ok(())
}

/// Ends every session of a user in an agency (the member was removed).
pub async fn revoke_all<C: sea_orm::ConnectionTrait>(
    conn: &C,
    agency_id: Uuid,
    user_id: Uuid,
) -> ApiResult<()> {
    session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(Utc::now()))
        .filter(session::Column::AgencyId.eq(agency_id))
        .filter(session::Column::UserId.eq(user_id))
        .filter(session::Column::RevokedAt.is_null())
        .exec(conn)
        .await?;
    Ok(())
}

/// Ends every session of a user, in every agency, except `keep` (a
/// password changed, "sign out everywhere else"); returns how many ended.
pub async fn revoke_others<C: sea_orm::ConnectionTrait>(
    conn: &C,
    user_id: Uuid,
    keep: Uuid,
) -> ApiResult<u64> {
    Ok(session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(Utc::now()))
        .filter(session::Column::UserId.eq(user_id))
        .filter(session::Column::Id.ne(keep))
        .filter(session::Column::RevokedAt.is_null())
        .exec(conn)
        .await?
        .rows_affected)
}

/// Whether session `s` is one of membership `m`: accepted, and begun after
/// the membership (a login that read a membership an admin removed at that
/// moment can leave a session the removal did not see; it must not come
/// back to life when the person is invited again).
pub fn belongs_to(s: &session::Model, m: &membership::Model) -> bool {
    m.invitation_hash.is_none() && s.created_at >= m.created_at
}
