//! Sign-up, login, token refresh, logout, accepting invitations, and `me`.

use super::types::{Agency, GqlRole, Member, User, decode, load_user, stored_role};
use super::{auth, limited_client, state};
use crate::audit::AuditEvent;
use crate::auth::sessions::{self, Issued};
use crate::auth::{password, tokens};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use rapport_domain::{Email, Kind, Name, Password, Role};
use rapport_store::entities::{agency, membership, user};
use rapport_store::tenancy::begin_for_agency;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, Set,
};
use uuid::Uuid;

/// Days an invitation can be accepted in.
pub const INVITATION_DAYS: i64 = 14;

/// A signed-in session: tokens plus who is signed in where.
#[derive(SimpleObject)]
pub struct AuthPayload {
    /// Short-lived JWT: send as `Authorization: Bearer <accessToken>`.
    access_token: String,
    /// When `accessToken` expires; call `refreshToken` before then.
    access_token_expires_at: DateTime<Utc>,
    /// Single use: exchange it with `refreshToken` for a new pair.
    refresh_token: String,
    /// The signed-in user.
    user: User,
    /// The agency this session is signed in to.
    agency: Agency,
    /// The user's role in that agency.
    role: GqlRole,
}

async fn payload<C: sea_orm::ConnectionTrait>(
    conn: &C,
    issued: Issued,
    user_id: Uuid,
    agency_id: Uuid,
    role: &str,
) -> ApiResult<AuthPayload> {
    let user = user::Entity::find_by_id(user_id)
        .one(conn)
        .await?
        .ok_or(ApiError::NotFound)?;
    let agency = agency::Entity::find_by_id(agency_id)
        .one(conn)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(AuthPayload {
        access_token: issued.access_token,
        access_token_expires_at: issued.access_expires_at,
        refresh_token: issued.refresh_token,
        user: User(user),
        agency: Agency(agency),
        role: stored_role(role)?,
    })
}

/// A new agency and its first member, the OWNER.
#[derive(InputObject)]
pub struct SignUpInput {
    /// Name of the new agency.
    agency_name: String,
    /// The owner's display name.
    name: String,
    /// The owner's e-mail address, used to sign in.
    email: String,
    /// The owner's password.
    password: String,
}

/// The signed-in person's current password and the new one.
#[derive(InputObject)]
pub struct ChangePasswordInput {
    /// The password now, asked again.
    current_password: String,
    /// The new password (10 to 256 characters).
    new_password: String,
}

/// E-mail and password, and optionally which agency to sign in to.
#[derive(InputObject)]
pub struct LoginInput {
    /// The account's e-mail address.
    email: String,
    /// The account's password.
    password: String,
    /// Which agency to sign in to, for people in several; default: the first joined.
    agency_id: Option<ID>,
}

/// The token of an invitation and the invited person's credentials.
#[derive(InputObject)]
pub struct AcceptInvitationInput {
    /// The invitation token returned by `inviteMember`.
    token: String,
    /// Your name (kept as given at invitation when omitted).
    name: Option<String>,
    /// A new password, or the current one if you already have an account.
    password: String,
}

/// Who is signed in.
#[derive(SimpleObject)]
pub struct Me {
    /// The signed-in user.
    user: User,
    /// The agency the session is signed in to.
    agency: Agency,
    /// The user's role in that agency.
    role: GqlRole,
    /// The user's membership of that agency.
    member: Member,
}

#[derive(Default)]
pub struct AuthQuery;

#[Object]
impl AuthQuery {
    /// The signed-in member: user, agency and role.
    async fn me(&self, ctx: &Context<'_>) -> ApiResult<Me> {
        let v = auth(ctx).viewer()?;
        let db = &state(ctx).db;
        let m = membership::Entity::find_by_id(v.membership_id)
            .one(db)
            .await?
            .ok_or(ApiError::Unauthenticated("membership no longer exists"))?;
        let a = agency::Entity::find_by_id(v.agency_id)
            .one(db)
            .await?
            .ok_or(ApiError::NotFound)?;
        Ok(Me {
            user: User(load_user(&state(ctx).db, v.user_id).await?),
            agency: Agency(a),
            role: v.role.into(),
            member: Member(m),
        })
    }
}

#[derive(Default)]
pub struct AuthMutation;

async fn limit(state: &AppState, key: String, limit: u64) -> ApiResult<()> {
    let window = state.settings.login_window.as_secs();
    match state.kv.over_limit(&key, limit, window).await? {
        Some(retry_after_secs) => Err(ApiError::RateLimited { retry_after_secs }),
        None => Ok(()),
    }
}

/// The password tries of one account: counted per client, so that a
/// guesser locks out only their own address, not the account's owner; and
/// for the account as a whole, with a higher ceiling, against guesses
/// spread over many addresses. Only wrong passwords keep counting: a
/// right one starts both windows over.
struct AccountTries {
    keys: [String; 2],
}

impl AccountTries {
    async fn count(st: &AppState, ctx: &Context<'_>, email: &str) -> ApiResult<Self> {
        let client = format!("rl:login:account:{email}:client:{}", limited_client(ctx));
        limit(st, client.clone(), st.settings.login_limit_per_account).await?;
        let all = format!("rl:login:account:{email}");
        limit(st, all.clone(), st.settings.login_limit_per_account_all).await?;
        Ok(Self {
            keys: [client, all],
        })
    }

    /// The right password: a person signing in from several devices is
    /// not locked out by their own logins.
    async fn clear(&self, st: &AppState) {
        for key in &self.keys {
            if let Err(e) = st.kv.clear_limit(key).await {
                tracing::warn!(error = %e, "resetting a login limit failed");
            }
        }
    }
}

#[Object]
impl AuthMutation {
    /// Creates an agency and its first member, the OWNER, and signs them in.
    async fn sign_up(&self, ctx: &Context<'_>, input: SignUpInput) -> ApiResult<AuthPayload> {
        let st = state(ctx);
        let agency_name = Name::parse("agencyName", &input.agency_name)?;
        let name = Name::parse("name", &input.name)?;
        let email = Email::parse(&input.email)?;
        let pw = Password::parse(&input.password)?;
        limit(
            st,
            format!("rl:signup:ip:{}", limited_client(ctx)),
            st.settings.login_limit_per_ip,
        )
        .await?;
        let hash = password::hash(&pw).await?;

        let now = Utc::now();
        let (agency_id, user_id) = (Uuid::now_v7(), Uuid::now_v7());
        let txn = begin_for_agency(&st.db, agency_id).await?;
        user::ActiveModel {
            id: Set(user_id),
            email: Set(email.as_str().to_string()),
            name: Set(name.into_string()),
            password_hash: Set(Some(hash)),
            created_at: Set(now),
        }
        .insert(&txn)
        .await?;
        agency::ActiveModel {
            id: Set(agency_id),
            name: Set(agency_name.into_string()),
            created_at: Set(now),
        }
        .insert(&txn)
        .await?;
        let member_id = Uuid::now_v7();
        membership::ActiveModel {
            id: Set(member_id),
            agency_id: Set(agency_id),
            user_id: Set(user_id),
            role: Set(Role::Owner.as_str().into()),
            restricted: Set(false),
            invitation_hash: Set(None),
            accepted_at: Set(Some(now)),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await?;
        AuditEvent::new("signUp")
            .target("Agency", agency_id)
            .record(&txn, agency_id, Some(user_id))
            .await?;
        txn.commit().await?;

        let issued = sessions::start(st, agency_id, user_id, Role::Owner.as_str()).await?;
        payload(&st.db, issued, user_id, agency_id, Role::Owner.as_str()).await
    }

    /// Signs in with e-mail and password. Attempts are rate limited per
    /// account and per client IP.
    async fn login(&self, ctx: &Context<'_>, input: LoginInput) -> ApiResult<AuthPayload> {
        const WRONG: ApiError = ApiError::Unauthenticated("e-mail or password is wrong");
        let st = state(ctx);
        let email = Email::parse(&input.email)?;
        limit(
            st,
            format!("rl:login:ip:{}", limited_client(ctx)),
            st.settings.login_limit_per_ip,
        )
        .await?;
        let tries = AccountTries::count(st, ctx, email.as_str()).await?;
        let found = user::Entity::find()
            .filter(user::Column::Email.eq(email.as_str()))
            .one(&st.db)
            .await?;
        let stored = found.as_ref().and_then(|u| u.password_hash.as_deref());
        if !password::verify(&input.password, stored).await? {
            return Err(WRONG);
        }
        tries.clear(st).await;
        let user = found.ok_or(WRONG)?;
        let mut q = membership::Entity::find()
            .filter(membership::Column::UserId.eq(user.id))
            .filter(membership::Column::InvitationHash.is_null());
        if let Some(a) = &input.agency_id {
            q = q.filter(membership::Column::AgencyId.eq(decode(Kind::Agency, a)?));
        }
        let m = q
            .order_by_asc(membership::Column::Id)
            .one(&st.db)
            .await?
            .ok_or(ApiError::Unauthenticated(
                "this account is not a member of that agency",
            ))?;
        let txn = begin_for_agency(&st.db, m.agency_id).await?;
        AuditEvent::new("login")
            .target("Member", m.id)
            .record(&txn, m.agency_id, Some(user.id))
            .await?;
        txn.commit().await?;
        let issued = sessions::start(st, m.agency_id, user.id, &m.role).await?;
        payload(&st.db, issued, user.id, m.agency_id, &m.role).await
    }

    /// Exchanges a refresh token for a new access and refresh token. Each
    /// refresh token works once; replaying a used one ends the session.
    async fn refresh_token(&self, ctx: &Context<'_>, token: String) -> ApiResult<AuthPayload> {
        let st = state(ctx);
        let r = sessions::rotate(st, &token).await?;
        let (sess, txn) = (&r.session, &r.txn);
        AuditEvent::new("refreshToken")
            .record(txn, sess.agency_id, Some(sess.user_id))
            .await?;
        let answer = payload(txn, r.issued, sess.user_id, sess.agency_id, &r.member.role).await?;
        r.txn.commit().await?;
        Ok(answer)
    }

    /// Ends the current session: its refresh token and every access token
    /// issued for it stop working at once.
    async fn logout(&self, ctx: &Context<'_>) -> ApiResult<bool> {
        let st = state(ctx);
        let v = auth(ctx).viewer()?;
        sessions::revoke(st, v.session_id).await?;
        let txn = v.scope.begin(&st.db).await?;
        AuditEvent::new("logout").by(&txn, v).await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Changes the signed-in person's password (the current one is asked
    /// again, and counts against the account's login limit) and ends
    /// their other sessions, in every agency; this one stays signed in.
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        input: ChangePasswordInput,
    ) -> ApiResult<bool> {
        let st = state(ctx);
        let v = auth(ctx).viewer()?;
        let u = load_user(&st.db, v.user_id).await?;
        let tries = AccountTries::count(st, ctx, &u.email).await?;
        if !password::verify(&input.current_password, u.password_hash.as_deref()).await? {
            return Err(ApiError::bad_input("currentPassword", "does not match"));
        }
        tries.clear(st).await;
        let new = Password::parse(&input.new_password)
            .map_err(|e| ApiError::bad_input("newPassword", e.reason))?;
        let hash = password::hash(&new).await?;
        let txn = v.scope.begin(&st.db).await?;
        let mut am = u.into_active_model();
        am.password_hash = Set(Some(hash));
        am.update(&txn).await?;
        // With the new password, never without it: a password changed
        // because it leaked must end the sessions it opened.
        sessions::revoke_others(&txn, v.user_id, v.session_id).await?;
        AuditEvent::new("changePassword").by(&txn, v).await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Ends the signed-in person's other sessions, in every agency (a lost
    /// phone, a shared computer); this one stays signed in. Returns how
    /// many ended.
    async fn logout_other_sessions(&self, ctx: &Context<'_>) -> ApiResult<i32> {
        let st = state(ctx);
        let v = auth(ctx).viewer()?;
        let txn = v.scope.begin(&st.db).await?;
        let ended = sessions::revoke_others(&txn, v.user_id, v.session_id).await?;
        AuditEvent::new("logoutOtherSessions")
            .details(serde_json::json!({ "ended": ended }))
            .by(&txn, v)
            .await?;
        txn.commit().await?;
        Ok(i32::try_from(ended).unwrap_or(i32::MAX))
    }

    /// Accepts an invitation from `inviteMember` and signs in to that agency.
    async fn accept_invitation(
        &self,
        ctx: &Context<'_>,
        input: AcceptInvitationInput,
    ) -> ApiResult<AuthPayload> {
        const BAD: ApiError = ApiError::Unauthenticated("invitation is invalid or already used");
        let st = state(ctx);
        limit(
            st,
            format!("rl:invite:ip:{}", limited_client(ctx)),
            st.settings.login_limit_per_ip,
        )
        .await?;
        let name = input
            .name
            .as_deref()
            .map(|n| Name::parse("name", n))
            .transpose()?;
        let m = membership::Entity::find()
            .filter(membership::Column::InvitationHash.eq(tokens::token_hash(input.token.trim())))
            .one(&st.db)
            .await?
            .ok_or(BAD)?;
        // A token left in an old e-mail or chat must not grant a role
        // months later: the inviter invites again.
        if Utc::now() - m.created_at > chrono::Duration::days(INVITATION_DAYS) {
            return Err(ApiError::Unauthenticated(
                "invitation has expired; ask for a new one",
            ));
        }
        let u = user::Entity::find_by_id(m.user_id)
            .one(&st.db)
            .await?
            .ok_or(BAD)?;
        let new_hash = match &u.password_hash {
            // An existing account proves itself with its current password,
            // and each try counts as a login to it: anyone can invite any
            // e-mail, so an invitation must not be a way around the
            // account's limit on password guesses.
            Some(h) => {
                let tries = AccountTries::count(st, ctx, &u.email).await?;
                if !password::verify(&input.password, Some(h)).await? {
                    return Err(ApiError::Unauthenticated(
                        "password does not match your existing account",
                    ));
                }
                tries.clear(st).await;
                None
            }
            // An account without a password was made by an invitation,
            // and its first password is that invitation's to set. Anyone
            // can invite any address and holds the token they invite
            // with: accepting their own later invitation must not let
            // them choose the password (and name) the invited person's
            // earlier invitation is waiting to have set.
            None => {
                let earlier = membership::Entity::find()
                    .filter(membership::Column::UserId.eq(u.id))
                    .filter(membership::Column::Id.ne(m.id))
                    .filter(membership::Column::InvitationHash.is_not_null())
                    .filter(membership::Column::CreatedAt.lt(m.created_at))
                    .filter(
                        membership::Column::CreatedAt
                            .gt(Utc::now() - chrono::Duration::days(INVITATION_DAYS)),
                    )
                    .one(&st.db)
                    .await?;
                if earlier.is_some() {
                    return Err(ApiError::Forbidden(
                        "an earlier invitation to this address is waiting: accept that one first, then this one with the same password",
                    ));
                }
                Some(password::hash(&Password::parse(&input.password)?).await?)
            }
        };
        let txn = begin_for_agency(&st.db, m.agency_id).await?;
        let now = Utc::now();
        let updated = membership::Entity::update_many()
            .col_expr(
                membership::Column::InvitationHash,
                sea_orm::sea_query::Expr::value(Option::<String>::None),
            )
            .col_expr(
                membership::Column::AcceptedAt,
                sea_orm::sea_query::Expr::value(now),
            )
            .filter(membership::Column::Id.eq(m.id))
            .filter(membership::Column::InvitationHash.is_not_null())
            .exec(&txn)
            .await?;
        if updated.rows_affected != 1 {
            return Err(BAD);
        }
        if let Some(h) = new_hash {
            // Only while the account still has none: a password set by the
            // invitation accepted a moment ago (the earlier one) stands.
            let set = user::Entity::update_many()
                .col_expr(
                    user::Column::PasswordHash,
                    sea_orm::sea_query::Expr::value(h),
                )
                .filter(user::Column::Id.eq(u.id))
                .filter(user::Column::PasswordHash.is_null())
                .exec(&txn)
                .await?;
            if set.rows_affected != 1 {
                return Err(ApiError::Unauthenticated(
                    "this account has a password now: accept the invitation with it",
                ));
            }
        }
        if let Some(n) = name {
            let mut am = u.clone().into_active_model();
            am.name = Set(n.into_string());
            am.update(&txn).await?;
        }
        AuditEvent::new("acceptInvitation")
            .target("Member", m.id)
            .record(&txn, m.agency_id, Some(u.id))
            .await?;
        txn.commit().await?;
        let issued = sessions::start(st, m.agency_id, u.id, &m.role).await?;
        payload(&st.db, issued, u.id, m.agency_id, &m.role).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn role_names_match_the_domain() {
        use rapport_domain::Role;
        for r in [Role::Owner, Role::Admin, Role::Agent, Role::ClientViewer] {
            assert_eq!(super::stored_role(r.as_str()).unwrap(), r.into());
        }
    }
}
