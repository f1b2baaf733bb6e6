//! A page of conversations, with their authors in the same query when they
//! are wanted, read by column position.
//!
//! sea-orm reads a joined row by prefixed column name: one formatted name
//! and one name lookup per column and row, which was a third of the CPU an
//! inbox request cost. Here the select list is the conversation's columns
//! then the author's, each in its entity's declaration order, and each
//! model is read from its offset.
//!
//! The page size is written into the SQL, not bound as a parameter: with a
//! bound LIMIT, PostgreSQL's generic plan guesses a tenth of the rows,
//! loses to the custom plan, and the statement is planned again on every
//! execution (about as much CPU as running it). With the number in the
//! text, each page size is a statement of its own (at most 101) that is
//! planned once per connection.
//!
//! The two JSON columns (the priority breakdown and the SLA snapshot) are
//! read only when the caller asks: PostgreSQL spends more CPU writing a
//! row's jsonb out than on all its other columns, and the client parses it
//! again. A list that shows neither reads a NULL in their place.

use crate::entities::conversation::StoredBreakdown;
use crate::entities::{author, conversation};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ConnectionTrait, DbErr, Iterable, JoinType, QueryResult, QuerySelect, QueryTrait,
    RelationTrait, Select, Statement,
};

/// Which of a conversation's JSON columns a page reads. One left out
/// stands in as [`StoredBreakdown::unread`] or `None`: the caller must not
/// show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub breakdown: bool,
    pub sla_targets: bool,
}

impl Wanted {
    pub const ALL: Wanted = Wanted {
        breakdown: true,
        sla_targets: true,
    };
}

/// At most `limit` rows of `page` (which must have no limit of its own).
pub async fn conversations<C: ConnectionTrait>(
    conn: &C,
    page: Select<conversation::Entity>,
    limit: u64,
    wanted: Wanted,
) -> Result<Vec<conversation::Model>, DbErr> {
    let q = conversation_columns(page.select_only(), wanted);
    conn.query_all_raw(limited(conn, q, limit))
        .await?
        .iter()
        .map(|row| conversation_at(row, 0, wanted))
        .collect()
}

/// At most `limit` rows of `page` (which must have no limit of its own),
/// each with its author (none only if the author row is gone).
pub async fn with_authors<C: ConnectionTrait>(
    conn: &C,
    page: Select<conversation::Entity>,
    limit: u64,
    wanted: Wanted,
) -> Result<Vec<(conversation::Model, Option<author::Model>)>, DbErr> {
    let mut q = conversation_columns(
        page.select_only()
            .join(JoinType::LeftJoin, conversation::Relation::Author.def()),
        wanted,
    );
    for (c, alias) in author::Column::iter().zip(AUTHOR_ALIASES) {
        // Aliased: some names repeat the conversation's (id, created_at).
        q = q.expr_as(Expr::col((author::Entity, c)), alias);
    }
    debug_assert_eq!(author::Column::iter().count(), AUTHOR_ALIASES.len());
    let width = conversation::Column::iter().count();
    conn.query_all_raw(limited(conn, q, limit))
        .await?
        .iter()
        .map(|row| Ok((conversation_at(row, 0, wanted)?, author_at(row, width)?)))
        .collect()
}

const AUTHOR_ALIASES: [&str; 10] = ["b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "b9"];

/// The conversation's columns in declaration order, NULL in place of a
/// JSON column not wanted.
fn conversation_columns(
    mut q: Select<conversation::Entity>,
    wanted: Wanted,
) -> Select<conversation::Entity> {
    use conversation::Column as C;
    for c in C::iter() {
        let skip = matches!(c, C::PriorityBreakdown) && !wanted.breakdown
            || matches!(c, C::SlaTargets) && !wanted.sla_targets;
        q = if skip {
            q.expr(Expr::cust("NULL"))
        } else {
            q.expr(Expr::col((conversation::Entity, c)))
        };
    }
    q
}

/// `q`'s statement with `LIMIT limit` written at its end (after ORDER BY).
fn limited<C: ConnectionTrait>(conn: &C, q: Select<conversation::Entity>, limit: u64) -> Statement {
    let mut stmt = q.build(conn.get_database_backend());
    stmt.sql.push_str(&format!(" LIMIT {limit}"));
    stmt
}

/// Takes column positions one after another from `at`.
struct Positions<'r> {
    row: &'r QueryResult,
    at: usize,
}

impl Positions<'_> {
    fn next<T: sea_orm::TryGetable>(&mut self) -> Result<T, DbErr> {
        self.at += 1;
        self.row.try_get_by_index(self.at - 1)
    }

    /// The next column when `read`, else `unread` (the column holds NULL).
    fn next_if<T: sea_orm::TryGetable>(&mut self, read: bool, unread: T) -> Result<T, DbErr> {
        if read {
            self.next()
        } else {
            self.at += 1;
            Ok(unread)
        }
    }
}

/// A conversation from columns `at..` (fields in declaration order, which
/// is the order of `conversation::Column::iter()`).
fn conversation_at(
    row: &QueryResult,
    at: usize,
    wanted: Wanted,
) -> Result<conversation::Model, DbErr> {
    let mut c = Positions { row, at };
    // Struct fields are evaluated in the order written.
    Ok(conversation::Model {
        id: c.next()?,
        agency_id: c.next()?,
        workspace_id: c.next()?,
        channel_id: c.next()?,
        author_id: c.next()?,
        parent_conversation_id: c.next()?,
        status: c.next()?,
        visibility: c.next()?,
        priority: c.next()?,
        priority_score: c.next()?,
        priority_breakdown: c.next_if(wanted.breakdown, StoredBreakdown::unread())?,
        sentiment: c.next()?,
        opening_sentiment: c.next()?,
        assignee_membership_id: c.next()?,
        sla_policy_id: c.next()?,
        sla_targets: c.next_if(wanted.sla_targets, None)?,
        first_response_due_at: c.next()?,
        next_response_due_at: c.next()?,
        resolution_due_at: c.next()?,
        due_at: c.next()?,
        first_responded_at: c.next()?,
        resolved_at: c.next()?,
        first_response_business_s: c.next()?,
        resolution_business_s: c.next()?,
        last_customer_message_at: c.next()?,
        recovered: c.next()?,
        created_at: c.next()?,
        updated_at: c.next()?,
        opened_by_agent: c.next()?,
    })
}

/// An author from columns `at..`, none when the join found no row.
fn author_at(row: &QueryResult, at: usize) -> Result<Option<author::Model>, DbErr> {
    let mut c = Positions { row, at };
    let Some(id) = c.next::<Option<uuid::Uuid>>()? else {
        return Ok(None);
    };
    Ok(Some(author::Model {
        id,
        agency_id: c.next()?,
        platform: c.next()?,
        external_id: c.next()?,
        handle: c.next()?,
        display_name: c.next()?,
        follower_count: c.next()?,
        verified: c.next()?,
        created_at: c.next()?,
        updated_at: c.next()?,
    }))
}
