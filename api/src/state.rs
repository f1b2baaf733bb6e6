use crate::Settings;
use crate::auth::tokens::JwtKeys;
use metrics_exporter_prometheus::PrometheusHandle;
use rapport_domain::crypto::{SealError, SecretBox};
use rapport_store::Kv;
use sea_orm::DatabaseConnection;
use std::sync::Arc;

/// Everything a request needs; cheap to clone (all handles).
#[derive(Clone)]
pub struct AppState {
    pub db: DatabaseConnection,
    pub kv: Kv,
    pub settings: Arc<Settings>,
    pub jwt: Arc<JwtKeys>,
    pub metrics: PrometheusHandle,
    pub secrets: Arc<SecretBox>,
    /// Near-duplicate indexes of sent replies, per workspace.
    pub replies: Arc<rapport_store::replies::ReplyIndexes>,
    /// Open signed-in WebSockets per member, on this process.
    pub sockets: Arc<crate::graphql::socket_auth::SocketCounts>,
    /// Answers to queries kept until their agency changes; PostgreSQL only.
    pub response_cache: Option<Arc<crate::response_cache::feed::ResponseCache>>,
    /// Channels this process took webhooks for (see `webhooks::known`).
    pub known_channels: Arc<crate::webhooks::known::KnownChannels>,
}

impl AppState {
    /// Fails when the secret key is not 32 bytes of base64.
    pub fn new(db: DatabaseConnection, kv: Kv, settings: Settings) -> Result<Self, SealError> {
        let jwt = Arc::new(JwtKeys::new(&settings.jwt_secret));
        let secrets = Arc::new(SecretBox::from_base64(&settings.secret_key)?);
        let response_cache = (db.get_database_backend() == sea_orm::DbBackend::Postgres
            && !settings.response_cache_ttl.is_zero())
        .then(|| {
            Arc::new(crate::response_cache::feed::ResponseCache::new(
                settings.response_cache_ttl,
                settings.response_cache_bytes,
            ))
        });
        Ok(Self {
            db,
            kv,
            settings: Arc::new(settings),
            jwt,
            metrics: crate::http::metrics_handle(),
            secrets,
            replies: Arc::default(),
            sockets: Arc::default(),
            response_cache,
            known_channels: Arc::default(),
        })
    }
}
