//! Tenancy, enforced in one place. Every request resolver and every job reads
//! and writes tenant data through a [`Scope`]: it adds the agency filter and
//! the member's workspace restriction to each query, and on PostgreSQL opens
//! transactions under the row-level-security role with the agency set, so a
//! forgotten filter still sees nothing of another tenant.

use crate::entities::{
    audit_entry, author, business_calendar, channel, conversation, membership,
    membership_workspace, message, raw_event, reply_refusal, reply_template, report_share_link,
    session, sla_event, sla_policy, team, team_member, webhook_delivery, webhook_subscription,
    workspace,
};
use crate::errors::{StoreError, StoreResult};
use rapport_migrations::APP_ROLE;
use sea_orm::sea_query::{IntoCondition, Query};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend,
    EntityTrait, QueryFilter, Select, SqliteTransactionMode, Statement, TransactionOptions,
    TransactionTrait,
};
use uuid::Uuid;

/// An entity whose rows belong to one agency.
pub trait TenantOwned: EntityTrait {
    fn agency_column() -> Self::Column;
}

/// A tenant entity whose rows also belong to one workspace.
pub trait WorkspaceOwned: TenantOwned {
    fn workspace_column() -> Self::Column;
}

macro_rules! tenant_owned {
    ($($m:ident),*) => {$(
        impl TenantOwned for $m::Entity {
            fn agency_column() -> Self::Column { $m::Column::AgencyId }
        }
    )*};
}
tenant_owned!(
    audit_entry,
    author,
    business_calendar,
    sla_event,
    sla_policy,
    channel,
    conversation,
    membership,
    membership_workspace,
    message,
    raw_event,
    reply_template,
    reply_refusal,
    report_share_link,
    session,
    team,
    team_member,
    webhook_delivery,
    webhook_subscription,
    workspace
);

macro_rules! workspace_owned {
    ($($m:ident),*) => {$(
        impl WorkspaceOwned for $m::Entity {
            fn workspace_column() -> Self::Column { $m::Column::WorkspaceId }
        }
    )*};
}
workspace_owned!(
    channel,
    conversation,
    message,
    raw_event,
    membership_workspace,
    business_calendar,
    sla_event,
    sla_policy,
    webhook_subscription,
    reply_template,
    reply_refusal,
    report_share_link
);

impl WorkspaceOwned for workspace::Entity {
    fn workspace_column() -> Self::Column {
        workspace::Column::Id
    }
}

/// Which of the agency's workspaces a member may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkspaceAccess {
    All,
    Only(Vec<Uuid>),
}

/// What one principal (a member, or a job acting for an agency) may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub agency_id: Uuid,
    pub workspaces: WorkspaceAccess,
}

impl Scope {
    /// The whole agency: jobs, owners and admins.
    pub fn agency(agency_id: Uuid) -> Self {
        Self {
            agency_id,
            workspaces: WorkspaceAccess::All,
        }
    }

    /// Whether no restriction applies (every workspace of the agency).
    pub fn sees_every_workspace(&self) -> bool {
        matches!(self.workspaces, WorkspaceAccess::All)
    }

    pub fn sees_workspace(&self, id: Uuid) -> bool {
        match &self.workspaces {
            WorkspaceAccess::All => true,
            WorkspaceAccess::Only(ids) => ids.contains(&id),
        }
    }

    /// All rows of `E` in this agency.
    pub fn select<E: TenantOwned>(&self) -> Select<E> {
        E::find().filter(E::agency_column().eq(self.agency_id))
    }

    /// Rows of `E` in this agency and in the workspaces this scope may see.
    pub fn select_in_workspaces<E: WorkspaceOwned>(&self) -> Select<E> {
        let q = self.select::<E>();
        match &self.workspaces {
            WorkspaceAccess::All => q,
            WorkspaceAccess::Only(ids) => {
                q.filter(E::workspace_column().is_in(ids.iter().copied()))
            }
        }
    }

    /// The members this scope may see: every one of the agency's for an
    /// unrestricted scope; else those who see every workspace (the
    /// agency's staff) and those restricted to at least one of its own. A
    /// member restricted to one client's brands must not learn the other
    /// clients' people (their viewers' addresses name the company).
    pub fn select_members(&self) -> Select<membership::Entity> {
        let q = self.select::<membership::Entity>();
        match &self.workspaces {
            WorkspaceAccess::All => q,
            WorkspaceAccess::Only(ids) => q.filter(
                Condition::any()
                    .add(membership::Column::Restricted.eq(false))
                    .add(
                        membership::Column::Id.in_subquery(
                            Query::select()
                                .column(membership_workspace::Column::MembershipId)
                                .from(membership_workspace::Entity)
                                .and_where(
                                    membership_workspace::Column::AgencyId.eq(self.agency_id),
                                )
                                .and_where(
                                    membership_workspace::Column::WorkspaceId
                                        .is_in(ids.iter().copied()),
                                )
                                .to_owned(),
                        ),
                    ),
            ),
        }
    }

    /// One member this scope may see ([`Self::select_members`]), or
    /// NOT_FOUND, as for a member of another agency.
    pub async fn member<C: ConnectionTrait>(
        &self,
        conn: &C,
        id: Uuid,
    ) -> StoreResult<membership::Model> {
        self.select_members()
            .filter(membership::Column::Id.eq(id))
            .one(conn)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// One row by primary key, or NOT_FOUND when it does not exist *or*
    /// belongs to another agency: callers cannot tell the two apart.
    pub async fn find<E, C>(&self, conn: &C, id: Uuid) -> StoreResult<E::Model>
    where
        E: TenantOwned,
        C: ConnectionTrait,
        <E::PrimaryKey as sea_orm::PrimaryKeyTrait>::ValueType: From<Uuid>,
    {
        E::find_by_id(id)
            .filter(E::agency_column().eq(self.agency_id).into_condition())
            .one(conn)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// One workspace this scope may see (archived ones included).
    pub async fn workspace<C: ConnectionTrait>(
        &self,
        conn: &C,
        id: Uuid,
    ) -> StoreResult<workspace::Model> {
        if !self.sees_workspace(id) {
            return Err(StoreError::NotFound);
        }
        self.find::<workspace::Entity, _>(conn, id).await
    }

    /// Opens a transaction for this agency. On PostgreSQL it switches to the
    /// row-level-security role and sets the agency for this transaction only
    /// (`SET LOCAL`, so a pooled connection never carries it further).
    pub async fn begin(&self, db: &DatabaseConnection) -> StoreResult<DatabaseTransaction> {
        begin_for_agency(db, self.agency_id).await
    }
}

/// Whether a member can see a workspace (unrestricted, or listed).
pub async fn member_sees_workspace<C: ConnectionTrait>(
    conn: &C,
    m: &membership::Model,
    workspace_id: Uuid,
) -> StoreResult<bool> {
    Ok(sees(conn, m, workspace_id).await?)
}

/// [`member_sees_workspace`] with the database's own error, for callers
/// inside ingestion's transaction.
async fn sees<C: ConnectionTrait>(
    conn: &C,
    m: &membership::Model,
    workspace_id: Uuid,
) -> Result<bool, sea_orm::DbErr> {
    if !m.restricted {
        return Ok(true);
    }
    Ok(membership_workspace::Entity::find()
        .filter(membership_workspace::Column::MembershipId.eq(m.id))
        .filter(membership_workspace::Column::WorkspaceId.eq(workspace_id))
        .one(conn)
        .await?
        .is_some())
}

/// Whether member `membership_id` may hold a conversation of workspace
/// `workspace_id` as its assignee: accepted, not a CLIENT_VIEWER, and
/// seeing the workspace. A conversation reopening is checked again: its
/// assignee may have been restricted away, or made a viewer, while it was
/// resolved (a role change unassigns only open conversations, keeping who
/// handled the others for reports).
///
/// The membership is read shared until commit, so a role change or a
/// removal cannot commit in between and miss the reopened conversation
/// (it unassigns only open ones). One being changed right now (its row
/// held by `updateMemberRole` or `removeMember`) is not waited for: that
/// change may next want the conversations this caller holds, a deadlock.
/// Its outcome is unknown, so the answer is no: the conversation reopens
/// unassigned, visible to the workspace, and can be assigned again.
pub async fn may_hold<C: ConnectionTrait>(
    conn: &C,
    membership_id: Uuid,
    workspace_id: Uuid,
) -> Result<bool, sea_orm::DbErr> {
    let Some(m) =
        crate::locks::for_share_unless_held(membership::Entity::find_by_id(membership_id))
            .one(conn)
            .await?
    else {
        return Ok(false);
    };
    if m.invitation_hash.is_some() || m.role == "CLIENT_VIEWER" {
        return Ok(false);
    }
    sees(conn, &m, workspace_id).await
}

pub async fn begin_for_agency(
    db: &DatabaseConnection,
    agency_id: Uuid,
) -> StoreResult<DatabaseTransaction> {
    begin(db, agency_id, Commit::Durable).await
}

/// Like [`begin_for_agency`], for work re-derived from rows already
/// durable: ingestion, whose every effect commits together with marking its
/// raw event processed. Its commit does not wait for the write-ahead log to
/// reach the disk (`synchronous_commit = off` for this transaction): a
/// server crash may lose the last fraction of a second of such commits,
/// which leaves their raw events PENDING and the reconciler redoes them.
/// A crash never leaves half a commit, so nothing is lost or doubled.
pub async fn begin_rederivable_for_agency(
    db: &DatabaseConnection,
    agency_id: Uuid,
) -> StoreResult<DatabaseTransaction> {
    begin(db, agency_id, Commit::Rederivable).await
}

#[derive(PartialEq)]
enum Commit {
    Durable,
    Rederivable,
}

/// A transaction of a system path (as the connecting role, over many
/// tenants) that reads and then writes. On SQLite it takes the write lock
/// up front: a deferred transaction that reads and then writes fails at
/// once ("database is locked") when another connection wrote in between;
/// an immediate one waits.
pub async fn begin_writing(db: &DatabaseConnection) -> StoreResult<DatabaseTransaction> {
    Ok(if db.get_database_backend() == DbBackend::Sqlite {
        db.begin_with_options(TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..Default::default()
        })
        .await?
    } else {
        db.begin().await?
    })
}

async fn begin(
    db: &DatabaseConnection,
    agency_id: Uuid,
    commit: Commit,
) -> StoreResult<DatabaseTransaction> {
    let txn = begin_writing(db).await?;
    if txn.get_database_backend() == DbBackend::Postgres {
        // One round trip: `role` is a setting like any other, and
        // `is_local = true` scopes each to this transaction (SET LOCAL).
        let sql = if commit == Commit::Rederivable {
            "SELECT set_config('role', $1, true), set_config('rapport.agency_id', $2, true), \
             set_config('synchronous_commit', 'off', true)"
        } else {
            "SELECT set_config('role', $1, true), set_config('rapport.agency_id', $2, true)"
        };
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            [APP_ROLE.into(), agency_id.to_string().into()],
        ))
        .await?;
    }
    Ok(txn)
}
