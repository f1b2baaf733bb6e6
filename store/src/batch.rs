//! Changing many rows of one table in one statement. Ingestion changes up
//! to one conversation and one author per message; a statement each cost
//! PostgreSQL more in per-statement work (parse, plan, executor start)
//! than in the rows themselves. On PostgreSQL the rows travel as one JSON
//! array read by `jsonb_to_recordset`, so the statement's text is the
//! same whatever the number of rows and is prepared once per connection.
//! Other backends get one `UPDATE` per row from the caller.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};
use serde_json::{Map, Value};
use uuid::Uuid;

/// One table's batched update: `columns` are `(name, PostgreSQL type)`,
/// rows are matched on `id` (a uuid).
pub struct Update {
    sql: String,
    columns: &'static [(&'static str, &'static str)],
}

impl Update {
    pub fn new(table: &str, columns: &'static [(&'static str, &'static str)]) -> Self {
        let set: Vec<String> = columns
            .iter()
            .map(|(c, _)| format!("{c} = v.{c}"))
            .collect();
        let typed: Vec<String> = columns.iter().map(|(c, t)| format!("{c} {t}")).collect();
        // The ids again as an array: the planner guesses 100 rows for any
        // `jsonb_to_recordset` and would scan the whole table to hash-join
        // them; `id = ANY(...)` keeps it on the primary key.
        Self {
            sql: format!(
                "UPDATE {table} t SET {} FROM jsonb_to_recordset($1::jsonb) AS v(id uuid, {}) \
                 WHERE t.id = v.id AND t.id = ANY($2::uuid[])",
                set.join(", "),
                typed.join(", ")
            ),
            columns,
        }
    }

    /// Applies `rows` (`(id, every column)`; build timestamps with
    /// [`timestamp`]). Rows are changed, and so locked, in id order
    /// whichever side of the join the planner scans first, so concurrent
    /// batches cannot deadlock on each other's rows. Every id must exist
    /// and appear once, else `RecordNotUpdated` (the caller's transaction
    /// then rolls back). PostgreSQL only.
    pub async fn run<C: ConnectionTrait>(
        &self,
        conn: &C,
        mut rows: Vec<(Uuid, Map<String, Value>)>,
    ) -> Result<(), DbErr> {
        if rows.is_empty() {
            return Ok(());
        }
        debug_assert!(
            rows.iter()
                .all(|(_, r)| self.columns.iter().all(|(c, _)| r.contains_key(*c)))
        );
        rows.sort_unstable_by_key(|(id, _)| *id);
        let ids: Vec<Uuid> = rows.iter().map(|(id, _)| *id).collect();
        let n = ids.len() as u64;
        let doc = Value::Array(
            rows.into_iter()
                .map(|(id, mut r)| {
                    r.insert("id".into(), id.to_string().into());
                    Value::Object(r)
                })
                .collect(),
        );
        let done = conn
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                &self.sql,
                [doc.into(), ids.into()],
            ))
            .await?;
        if done.rows_affected() != n {
            return Err(DbErr::RecordNotUpdated);
        }
        Ok(())
    }
}

/// A timestamp as PostgreSQL stores it: microseconds, truncated (as the
/// driver binds a `DateTime` elsewhere, so both paths store the same value).
pub fn timestamp(t: DateTime<Utc>) -> Value {
    Value::String(t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
}

/// An optional timestamp (`null` for none).
pub fn timestamp_opt(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_keep_microseconds_truncated() {
        let t = DateTime::parse_from_rfc3339("2026-12-01T20:00:00.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(timestamp(t), "2026-12-01T20:00:00.123456Z");
        assert_eq!(timestamp_opt(None), Value::Null);
    }

    #[test]
    fn one_statement_text_for_any_number_of_rows() {
        let u = Update::new("authors", &[("handle", "text"), ("verified", "boolean")]);
        assert_eq!(
            u.sql,
            "UPDATE authors t SET handle = v.handle, verified = v.verified \
             FROM jsonb_to_recordset($1::jsonb) AS v(id uuid, handle text, verified boolean) \
             WHERE t.id = v.id AND t.id = ANY($2::uuid[])"
        );
    }
}
