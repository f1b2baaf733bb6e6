//! The GraphQL schema: the public contract. `schema.graphql` at the
//! repository root is generated from this code by `rapport schema`.

mod audit_log;
mod auth;
pub mod channels;
pub mod conversations;
pub mod live;
mod members;
mod paging;
pub mod query_shape;
mod replies;
mod reports;
mod sla;
pub mod socket_auth;
mod teams;
mod templates;
mod types;
mod webhooks;
mod workspaces;

use crate::auth::viewer::Auth;
use crate::state::AppState;
use async_graphql::{Context, MergedObject, Schema, SchemaBuilder};

/// Entry points for reading. Every query needs a signed-in member
/// (`Authorization: Bearer <accessToken>`); results are limited to the
/// member's agency and the workspaces they may see. Errors carry
/// `extensions.code`, e.g. UNAUTHENTICATED, FORBIDDEN or NOT_FOUND.
#[derive(MergedObject, Default)]
pub struct QueryRoot(
    auth::AuthQuery,
    workspaces::WorkspaceQuery,
    members::MemberQuery,
    audit_log::AuditQuery,
    channels::ChannelQuery,
    conversations::ConversationQuery,
    sla::SlaQuery,
    webhooks::WebhookQuery,
    replies::ReplyQuery,
    templates::TemplateQuery,
    teams::TeamQuery,
    reports::ReportQuery,
);

/// Entry points for changes. Apart from `signUp`, `login`, `refreshToken`
/// and `acceptInvitation`, every mutation needs a signed-in member. Errors
/// carry `extensions.code`: UNAUTHENTICATED, FORBIDDEN, NOT_FOUND,
/// BAD_USER_INPUT, RATE_LIMITED, CANNED_REPLY or INTERNAL.
#[derive(MergedObject, Default)]
pub struct MutationRoot(
    auth::AuthMutation,
    members::MemberMutation,
    workspaces::WorkspaceMutation,
    channels::ChannelMutation,
    conversations::ConversationMutation,
    conversations::ImportMutation,
    sla::SlaMutation,
    webhooks::WebhookMutation,
    replies::ReplyMutation,
    templates::TemplateMutation,
    teams::TeamMutation,
    reports::ReportMutation,
);

pub type RapportSchema = Schema<QueryRoot, MutationRoot, live::SubscriptionRoot>;

/// Errors raised by the engine itself (syntax, validation, depth and
/// complexity limits, variable coercion) carry no code; they are the
/// client's to fix, so they get BAD_USER_INPUT. Resolver errors already
/// carry theirs. For HTTP responses and for every operation over a socket.
pub fn tag_engine_errors(r: &mut async_graphql::Response) {
    for e in &mut r.errors {
        let ext = e.extensions.get_or_insert_with(Default::default);
        if ext.get("code").is_none() {
            ext.set("code", "BAD_USER_INPUT");
        }
    }
}

/// The client's address, for per-IP rate limits.
#[derive(Clone, Debug)]
pub struct ClientIp(pub String);

pub fn build(state: Option<AppState>, max_depth: usize, max_complexity: usize) -> RapportSchema {
    let mut b = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        live::SubscriptionRoot,
    )
    .limit_depth(max_depth)
    .limit_complexity(max_complexity)
    .limit_recursive_depth(32)
    .limit_directives(16)
    .extension(query_shape::ExpansionLimit)
    .extension(socket_auth::PerOperationAuth);
    b = describe_connections(b);
    if let Some(state) = state {
        b = b.data(state);
    }
    b.finish()
}

/// async-graphql's connection types carry no description of their own:
/// they get one here, so that every type of the schema has one.
fn describe_connections(
    b: SchemaBuilder<QueryRoot, MutationRoot, live::SubscriptionRoot>,
) -> SchemaBuilder<QueryRoot, MutationRoot, live::SubscriptionRoot> {
    use async_graphql::connection::Connection;
    b.override_output_type_description::<Connection<String, types::AuditEntry>>(
        "A page of audit log entries (Relay connection): pass `pageInfo.endCursor` as `after` for the next page.",
    )
    .override_output_type_description::<Connection<String, channels::Channel>>(
        "A page of channels (Relay connection): pass `pageInfo.endCursor` as `after` for the next page.",
    )
    .override_output_type_description::<Connection<String, conversations::Conversation>>(
        "A page of conversations (Relay connection): pass `pageInfo.endCursor` as `after` for the next page.",
    )
    .override_output_type_description::<Connection<String, conversations::DeadLetter>>(
        "A page of dead letters (Relay connection): pass `pageInfo.endCursor` as `after` for the next page.",
    )
    .override_output_type_description::<Connection<String, types::Member>>(
        "A page of members (Relay connection): pass `pageInfo.endCursor` as `after` for the next page.",
    )
    .override_output_type_description::<Connection<String, conversations::Message>>(
        "A page of messages (Relay connection): pass `pageInfo.endCursor` as `after` for the next page.",
    )
    .override_output_type_description::<Connection<String, sla::SlaEvent>>(
        "A page of SLA events (Relay connection): pass `pageInfo.endCursor` as `after` for the next page.",
    )
    .override_output_type_description::<Connection<String, webhooks::WebhookDelivery>>(
        "A page of webhook deliveries (Relay connection): pass `pageInfo.endCursor` as `after` for the next page.",
    )
    .override_output_type_description::<Connection<String, types::Workspace>>(
        "A page of workspaces (Relay connection): pass `pageInfo.endCursor` as `after` for the next page.",
    )
}

/// The SDL written to `schema.graphql`.
pub fn sdl() -> String {
    build(None, 12, 2_000).sdl()
}

/// The complexity of one report or overview (it reads a period's rollups,
/// or all of a workspace's breaches), or of a conversation list with a text
/// search (which scans message bodies): repeated under aliases, a handful
/// fill the query's budget, where plain fields would let hundreds through.
pub(crate) const REPORT_COST: usize = 250;

/// The complexity of a plain list (no `first`; up to a few hundred rows)
/// per field asked of its items: a page's worth, so aliases cannot repeat
/// it hundreds of times.
pub(crate) const LIST_COST: usize = 20;

/// As [`LIST_COST`], for lists that hold a handful of items (a workspace's
/// policies, calendars, webhook subscriptions): a connection nested in them
/// still fits in the budget.
pub(crate) const FEW_COST: usize = 5;

/// A field that reads another row per item it is asked on.
pub(crate) const LOOKUP_COST: usize = 5;

/// Rows a plain list returns at most.
pub(crate) const MAX_LISTED: u64 = 500;

pub(crate) fn state<'a>(ctx: &Context<'a>) -> &'a AppState {
    ctx.data_unchecked::<AppState>()
}

pub(crate) fn auth<'a>(ctx: &Context<'a>) -> &'a Auth {
    ctx.data_opt::<Auth>().unwrap_or(&Auth::Anonymous)
}

pub(crate) fn client_ip<'a>(ctx: &Context<'a>) -> &'a str {
    ctx.data_opt::<ClientIp>()
        .map_or("unknown", |ip| ip.0.as_str())
}

/// The client as per-IP limits count it (see
/// `rapport_domain::client_ip::limit_key`).
pub(crate) fn limited_client(ctx: &Context<'_>) -> String {
    let ip = client_ip(ctx);
    ip.parse()
        .map_or_else(|_| ip.to_string(), rapport_domain::client_ip::limit_key)
}
