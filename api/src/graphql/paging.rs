//! Keyset pagination into Relay connections. Keys are UUIDv7, so `id`
//! order is creation order and "after cursor" is an index range scan.

use crate::error::ApiResult;
use async_graphql::OutputType;
use async_graphql::connection::{Connection, Edge};
use rapport_domain::{Cursor, PageRequest};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Select,
};
use uuid::Uuid;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Order {
    OldestFirst,
    NewestFirst,
}

pub async fn keyset<E, C, N>(
    conn: &C,
    query: Select<E>,
    id_column: E::Column,
    page: PageRequest,
    order: Order,
    id_of: impl Fn(&E::Model) -> Uuid,
    node: impl Fn(E::Model) -> N,
) -> ApiResult<Connection<String, N>>
where
    E: EntityTrait,
    C: ConnectionTrait,
    N: OutputType,
{
    let mut q = query;
    if let Some(Cursor(after)) = page.after {
        q = match order {
            Order::OldestFirst => q.filter(id_column.gt(after)),
            Order::NewestFirst => q.filter(id_column.lt(after)),
        };
    }
    q = match order {
        Order::OldestFirst => q.order_by_asc(id_column),
        Order::NewestFirst => q.order_by_desc(id_column),
    };
    let mut rows = q.limit(page.first + 1).all(conn).await?;
    let has_next = rows.len() as u64 > page.first;
    rows.truncate(page.first as usize);
    let mut connection = Connection::new(page.after.is_some(), has_next);
    connection.edges.extend(
        rows.into_iter()
            .map(|r| Edge::new(Cursor::encode(id_of(&r)), node(r))),
    );
    Ok(connection)
}
