//! Knobs of the API that the binary fills from flags and environment.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Settings {
    pub jwt_secret: String,
    /// 32-byte base64 key sealing channel secrets at rest.
    pub secret_key: String,
    /// Base URL platforms reach this API at; webhook URLs start with it.
    pub public_url: String,
    /// Largest accepted webhook body, in bytes (413 above).
    pub max_webhook_bytes: usize,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// How long after a rotation the token just spent is refused without
    /// ending its session (two tabs refreshing at once); older spent
    /// tokens, or this one later, end it.
    pub refresh_reuse_grace: Duration,
    /// Largest accepted request body on /graphql, in bytes.
    pub max_body_bytes: usize,
    pub max_query_depth: usize,
    pub max_query_complexity: usize,
    /// Login attempts allowed per account from one client, per account
    /// from all clients together, and per client IP, per window.
    pub login_limit_per_account: u64,
    pub login_limit_per_account_all: u64,
    pub login_limit_per_ip: u64,
    pub login_window: Duration,
    /// HTTP worker threads; None: one per core.
    pub http_workers: Option<usize>,
    /// How long a request body may take to arrive, whole (408 after): a
    /// client sending a byte a second would otherwise hold its connection
    /// for as long as it likes.
    pub body_deadline: Duration,
    /// How long a WebSocket may stay open without signing in (a
    /// `connection_init` with a valid token); closed after.
    pub socket_sign_in_deadline: Duration,
    /// Reverse proxies whose `X-Forwarded-For` names the client for per-IP
    /// limits; none: the TCP peer is the client.
    pub trusted_proxies: Vec<rapport_domain::client_ip::Cidr>,
    /// How long a query's answer may be served again to the same session
    /// while nothing of its agency changes (PostgreSQL only; zero: never).
    /// Fields derived from the clock are at most this old.
    pub response_cache_ttl: Duration,
    /// Memory the kept answers may take, in bytes.
    pub response_cache_bytes: usize,
}

impl Settings {
    pub fn new(jwt_secret: String, secret_key: String, public_url: String) -> Self {
        Self {
            jwt_secret,
            secret_key,
            public_url: public_url.trim_end_matches('/').to_string(),
            max_webhook_bytes: 1024 * 1024,
            access_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            refresh_reuse_grace: Duration::from_secs(10),
            max_body_bytes: 256 * 1024,
            max_query_depth: 16,
            max_query_complexity: 2_000,
            login_limit_per_account: 10,
            login_limit_per_account_all: 100,
            login_limit_per_ip: 100,
            login_window: Duration::from_secs(15 * 60),
            http_workers: None,
            body_deadline: Duration::from_secs(30),
            socket_sign_in_deadline: Duration::from_secs(10),
            trusted_proxies: Vec::new(),
            response_cache_ttl: Duration::from_millis(500),
            response_cache_bytes: 64 * 1024 * 1024,
        }
    }
}
