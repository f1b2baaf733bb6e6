//! The GraphQL schema: the public contract. `schema.graphql` at the
//! repository root is generated from this code by `rapport schema`.

mod audit_log;
mod auth;
pub mod channels;
pub mod conversations;
pub mod live;
mod members;
mod paging;
mod replies;
mod reports;
mod sla;
mod teams;
mod templates;
mod types;
mod webhooks;
mod workspaces;

use crate::auth::viewer::Auth;
use crate::state::AppState;
use async_graphql::{Context, MergedObject, Schema};

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
    .limit_directives(16);
    if let Some(state) = state {
        b = b.data(state);
    }
    b.finish()
}

/// The SDL written to `schema.graphql`.
pub fn sdl() -> String {
    build(None, 12, 2_000).sdl()
}

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
