//! The HTTP adapter: actix-web server, GraphQL schema and resolvers, auth.
//! Domain rules come from `rapport-domain`, storage from `rapport-store`.

pub mod audit;
pub mod auth;
pub mod error;
pub mod export;
pub mod graphql;
pub mod http;
pub mod reports;
pub mod response_cache;
pub mod settings;
pub mod share;
pub mod state;
pub mod webhooks;
pub mod ws_limit;

pub use error::ApiError;
pub use settings::Settings;
pub use state::AppState;
