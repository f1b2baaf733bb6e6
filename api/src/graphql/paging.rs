//! Keyset pagination into Relay connections. Keys are UUIDv7, so `id`
//! order is creation order and "after cursor" is an index range scan.

use crate::error::ApiResult;
use async_graphql::OutputType;
use async_graphql::connection::{Connection, Edge, EmptyFields};
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
    let rows = q.limit(page.first + 1).all(conn).await?;
    Ok(connection(rows, page.first, page.after.is_some(), |r| {
        Edge::new(Cursor::encode(id_of(&r)), node(r))
    }))
}

/// A page from `rows` fetched with a limit of `first + 1`: the extra row,
/// if any, only says that there is a next page.
pub fn connection<T, N: OutputType>(
    mut rows: Vec<T>,
    first: u64,
    after: bool,
    edge: impl Fn(T) -> Edge<String, N, EmptyFields>,
) -> Connection<String, N> {
    let has_next = rows.len() as u64 > first;
    rows.truncate(first as usize);
    let mut page = Connection::new(after, has_next);
    page.edges.extend(rows.into_iter().map(edge));
    page
}
