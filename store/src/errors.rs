//! Storage errors. Unique-constraint violations (and text the database
//! cannot store) are classified here, once, into user-facing errors;
//! everything else stays an internal error.

use sea_orm::{DbErr, SqlErr};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// The database refused the input itself (a unique key, text it cannot
    /// store); the text is safe to show users.
    #[error("{0}")]
    Conflict(&'static str),
    #[error("database error: {0}")]
    Db(DbErr),
}

pub type Found<T> = Result<Option<T>, StoreError>;

/// A lookup whose "not found" is an answer (an optional field), while
/// every other error stays one.
pub trait Optional<T> {
    fn optional(self) -> Found<T>;
}

impl<T> Optional<T> for Result<T, StoreError> {
    fn optional(self) -> Found<T> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// (PostgreSQL index name, SQLite column list, message for the user).
const UNIQUE_MESSAGES: &[(&str, &str, &str)] = &[
    (
        "ux_users_email",
        "users.email",
        "an account with this e-mail address already exists",
    ),
    (
        "ux_workspaces_name",
        "workspaces.agency_id, workspaces.name",
        "a workspace with this name already exists",
    ),
    (
        "ux_teams_name",
        "teams.agency_id, teams.name",
        "a team of this name exists already",
    ),
    (
        "ux_channels_account",
        "channels.workspace_id, channels.kind, channels.external_account_id",
        "this account is connected in this workspace already",
    ),
    (
        "ux_memberships_user",
        "memberships.agency_id, memberships.user_id",
        "this person is already a member of the agency",
    ),
];

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        match err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(msg)) => StoreError::Conflict(
                UNIQUE_MESSAGES
                    .iter()
                    .find(|(pg, lite, _)| msg.contains(pg) || msg.contains(lite))
                    .map(|(_, _, user)| *user)
                    .unwrap_or("this conflicts with an existing record"),
            ),
            // PostgreSQL's text holds no U+0000 (SQLSTATE 22021); inputs
            // that can carry one are parsed to refuse it, this is the net.
            // (22P05 when it is escaped inside a JSON document.)
            _ if err
                .to_string()
                .contains("invalid byte sequence for encoding")
                || err
                    .to_string()
                    .contains("unsupported Unicode escape sequence") =>
            {
                StoreError::Conflict("text must not contain the NUL character (U+0000)")
            }
            _ => StoreError::Db(err),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;
