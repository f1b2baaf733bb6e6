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
}

impl AppState {
    /// Fails when the secret key is not 32 bytes of base64.
    pub fn new(db: DatabaseConnection, kv: Kv, settings: Settings) -> Result<Self, SealError> {
        let jwt = Arc::new(JwtKeys::new(&settings.jwt_secret));
        let secrets = Arc::new(SecretBox::from_base64(&settings.secret_key)?);
        Ok(Self {
            db,
            kv,
            settings: Arc::new(settings),
            jwt,
            metrics: crate::http::metrics_handle(),
            secrets,
            replies: Arc::default(),
            sockets: Arc::default(),
        })
    }
}
