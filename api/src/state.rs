use crate::Settings;
use crate::auth::tokens::JwtKeys;
use metrics_exporter_prometheus::PrometheusHandle;
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
}

impl AppState {
    pub fn new(db: DatabaseConnection, kv: Kv, settings: Settings) -> Self {
        let jwt = Arc::new(JwtKeys::new(&settings.jwt_secret));
        Self {
            db,
            kv,
            settings: Arc::new(settings),
            jwt,
            metrics: crate::http::metrics_handle(),
        }
    }
}
