//! Test harness: each test gets its own database (a fresh SQLite file, or a
//! fresh PostgreSQL database), its own Redis key prefix, and a real API
//! server on a free port. `RAPPORT_TEST_BACKEND=postgres` selects
//! PostgreSQL (admin URL from `RAPPORT_TEST_POSTGRES_URL`).

#![allow(dead_code)]

use rapport_api::{AppState, Settings};
pub use rapport_store::kv::Topic;
use rapport_store::{Kv, db};
use serde_json::{Value, json};
use std::net::TcpListener;
use uuid::Uuid;

pub const JWT_SECRET: &str = "test-secret-0123456789abcdef0123456789";
/// 32 bytes of base64.
pub const SECRET_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
pub const PASSWORD: &str = "correct horse battery staple";

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn postgres_admin_url() -> String {
    std::env::var("RAPPORT_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Benchmarks run on PostgreSQL on this host: reached without TLS, as the
/// README advises for a server on the same host (TLS on loopback only
/// spends CPU on both ends). Call before any other thread starts.
pub fn bench_on_local_postgres() {
    // Safe: called first thing in a benchmark's main, single-threaded.
    unsafe {
        std::env::set_var("RAPPORT_TEST_BACKEND", "postgres");
        if std::env::var_os("RAPPORT_TEST_POSTGRES_URL").is_none() {
            std::env::set_var(
                "RAPPORT_TEST_POSTGRES_URL",
                "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
            );
        }
    }
}

pub fn is_postgres() -> bool {
    std::env::var("RAPPORT_TEST_BACKEND").as_deref() == Ok("postgres")
}

/// A database of its own, removed when dropped.
pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
    _dir: Option<TempDir>,
}

pub struct TempDir(pub std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TestDb {
    pub async fn new() -> Self {
        if is_postgres() {
            use sea_orm::ConnectionTrait;
            let name = format!("rapport_test_{}", Uuid::new_v4().simple());
            let admin = sea_orm::Database::connect(postgres_admin_url())
                .await
                .expect("PostgreSQL for tests (RAPPORT_TEST_POSTGRES_URL)");
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create test database");
            admin.close().await.ok();
            let base = postgres_admin_url();
            let (base, params) = base.split_once('?').unwrap_or((&base, ""));
            let root = &base[..base.rfind('/').expect("database in URL")];
            let params = if params.is_empty() {
                String::new()
            } else {
                format!("?{params}")
            };
            TestDb {
                url: format!("{root}/{name}{params}"),
                pg_name: Some(name),
                _dir: None,
            }
        } else {
            let dir =
                std::env::temp_dir().join(format!("rapport-test-{}", Uuid::new_v4().simple()));
            std::fs::create_dir_all(&dir).unwrap();
            TestDb {
                url: format!("sqlite://{}/rapport.db?mode=rwc", dir.display()),
                pg_name: None,
                _dir: Some(TempDir(dir)),
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            // Kept for a look with psql (benchmarks): RAPPORT_TEST_KEEP_DB=1.
            if std::env::var_os("RAPPORT_TEST_KEEP_DB").is_some() {
                eprintln!("kept database {name}");
                return;
            }
            // Drop runs outside async; use a short-lived runtime on a thread.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    use sea_orm::ConnectionTrait;
                    if let Ok(admin) = sea_orm::Database::connect(postgres_admin_url()).await {
                        let _ = admin
                            .execute_unprepared(&format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            ))
                            .await;
                        let _ = admin.close().await;
                    }
                });
            })
            .join();
        }
    }
}

/// A Redis key prefix of its own; its keys are deleted when dropped.
pub struct TestRedis {
    pub prefix: String,
}

impl TestRedis {
    pub fn new() -> Self {
        TestRedis {
            prefix: format!("test:{}", Uuid::new_v4().simple()),
        }
    }

    pub async fn kv(&self) -> Kv {
        Kv::connect(&redis_url(), &self.prefix)
            .await
            .expect("Redis for tests (REDIS_URL)")
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let prefix = self.prefix.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(client) = redis::Client::open(redis_url())
                && let Ok(mut conn) = client.get_connection()
            {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{prefix}:*"))
                    .query(&mut conn)
                    .unwrap_or_default();
                if !keys.is_empty() {
                    let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
                }
            }
        })
        .join();
    }
}

pub fn install_crypto() {
    // Logs of the server under test, with `RUST_LOG=...` (captured per test).
    if std::env::var("RUST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A running API server with its own database and Redis prefix.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub db: TestDb,
    pub redis: TestRedis,
    worker_stop: Option<tokio::sync::watch::Sender<bool>>,
    worker_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Workspaces whose import channel can publish (see
    /// `answerable_imports`).
    answerable: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.worker_stop.take() {
            let _ = tx.send(true);
        }
    }
}

/// Worker timings for tests: quick polls and quick reclaim.
pub fn fast_worker_config(name: &str) -> rapport_worker::WorkerConfig {
    rapport_worker::WorkerConfig {
        consumer: name.into(),
        block: std::time::Duration::from_millis(100),
        batch: 64,
        claim_idle: std::time::Duration::from_millis(500),
        max_deliveries: 3,
        concurrency: 4,
        group: 8,
        // As many as the concurrency, so tests keep running transactions
        // side by side (races the default of one would hide).
        group_concurrency: 4,
        linger: std::time::Duration::ZERO,
    }
}

impl TestApp {
    /// The `rapport` binary running `subcommand` against this app's
    /// database, Redis prefix and secrets, quiet (output discarded, warnings
    /// only): for tests and benchmarks that need separate processes.
    pub fn rapport(&self, subcommand: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_rapport"));
        cmd.arg(subcommand)
            .env("DATABASE_URL", &self.db.url)
            .env("REDIS_URL", redis_url())
            .env("RAPPORT_REDIS_PREFIX", &self.redis.prefix)
            .env("RAPPORT_JWT_SECRET", JWT_SECRET)
            .env("RAPPORT_SECRET_KEY", SECRET_KEY)
            .env("RAPPORT_ALLOW_PRIVATE_URLS", "true")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd
    }

    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Settings)) -> Self {
        install_crypto();
        let test_db = TestDb::new().await;
        let conn = db::connect(&test_db.url).await.expect("connect test db");
        db::migrate(&conn).await.expect("migrate test db");
        let redis = TestRedis::new();
        let kv = redis.kv().await;
        let mut settings = Settings::new(
            JWT_SECRET.into(),
            SECRET_KEY.into(),
            "http://placeholder".into(),
        );
        settings.http_workers = Some(1);
        tweak(&mut settings);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        settings.public_url = base.clone();
        let state = AppState::new(conn, kv, settings).expect("test secret key");
        let server = rapport_api::http::server(state.clone(), listener).unwrap();
        tokio::spawn(server);
        TestApp {
            base,
            // The API closes a connection idle for 5 s (actix's keep-alive).
            // A request sent on one just as it closes fails with
            // IncompleteMessage, so the pool drops its own idle connections
            // well before that.
            client: reqwest::Client::builder()
                .pool_idle_timeout(std::time::Duration::from_secs(2))
                .build()
                .unwrap(),
            state,
            db: test_db,
            redis,
            worker_stop: None,
            answerable: Default::default(),
            worker_tasks: Vec::new(),
        }
    }

    /// An SLA engine on this app's database and Redis prefix, run by hand.
    pub fn sla_engine(&self) -> rapport_worker::sla::SlaEngine {
        self.sla_engine_with(Default::default())
    }

    pub fn sla_engine_with(
        &self,
        cfg: rapport_worker::sla::SlaConfig,
    ) -> rapport_worker::sla::SlaEngine {
        rapport_worker::sla::SlaEngine {
            db: self.state.db.clone(),
            kv: self.state.kv.clone(),
            cfg,
        }
    }

    /// Also runs the worker (all production handlers) in this process.
    pub async fn with_worker(self) -> Self {
        self.with_worker_publishing(|_| {}).await
    }

    /// The worker, with its reply publisher (and its sweep) configured by
    /// `tweak`: platform base URLs, backoff.
    pub async fn with_worker_publishing(
        mut self,
        tweak: impl FnOnce(&mut rapport_worker::publish::PublishConfig),
    ) -> Self {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut cfg = rapport_worker::publish::PublishConfig {
            tick: std::time::Duration::from_millis(100),
            // The tests' platforms and callbacks listen on 127.0.0.1.
            allow_private: true,
            ..Default::default()
        };
        tweak(&mut cfg);
        let publisher = std::sync::Arc::new(
            rapport_worker::publish::Publisher::new(
                self.state.db.clone(),
                self.state.kv.clone(),
                self.state.secrets.clone(),
                cfg,
            )
            .unwrap(),
        );
        self.worker_tasks
            .push(tokio::spawn(publisher.clone().run(rx.clone())));
        let handlers =
            rapport_worker::handlers(self.state.db.clone(), self.state.kv.clone(), publisher);
        let worker = rapport_worker::Worker::new(
            self.state.kv.clone(),
            handlers,
            fast_worker_config("test-worker"),
        );
        self.worker_tasks.push(tokio::spawn(async move {
            let _ = worker.run(rx).await;
        }));
        self.worker_stop = Some(tx);
        self
    }

    /// Stops the in-process worker and waits until it has stopped: what is
    /// enqueued afterwards stays in Redis for the test to drive.
    pub async fn stop_worker(&mut self) {
        if let Some(tx) = self.worker_stop.take() {
            let _ = tx.send(true);
        }
        for task in self.worker_tasks.drain(..) {
            task.await.unwrap();
        }
    }

    /// Polls `check` until it holds (or panics after ~10 s).
    pub async fn eventually<T>(&self, what: &str, check: impl AsyncFnMut() -> Option<T>) -> T {
        self.eventually_within(10, what, check).await
    }

    /// Waits until some client (the server's subscription) listens on the
    /// workspace's pub/sub channel of `topic`: a fixed pause could be too
    /// short on a busy machine, and an event published before it is lost.
    pub async fn subscribed(&self, topic: Topic, ws: &str) {
        let ws = rapport_domain::GlobalId::decode(rapport_domain::Kind::Workspace, ws).unwrap();
        let channel = self.state.kv.channel(topic, ws);
        self.eventually("the subscription reaches Redis", async || {
            let counts: Vec<(String, u64)> = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channel)
                .query_async(&mut self.state.kv.conn())
                .await
                .ok()?;
            counts.first().is_some_and(|(_, n)| *n > 0).then_some(())
        })
        .await;
    }

    /// Polls `check` every 50 ms until it holds, for at most `secs`.
    pub async fn eventually_within<T>(
        &self,
        secs: u64,
        what: &str,
        mut check: impl AsyncFnMut() -> Option<T>,
    ) -> T {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if std::time::Instant::now() > deadline {
                panic!("timed out after {secs} s waiting for: {what}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub async fn post_raw(&self, token: Option<&str>, body: Vec<u8>) -> reqwest::Response {
        let mut req = self
            .client
            .post(format!("{}/graphql", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("request to test server")
    }

    /// Runs one GraphQL operation and returns the whole response body.
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let body = json!({ "query": query, "variables": variables });
        let resp = self
            .post_raw(token, serde_json::to_vec(&body).unwrap())
            .await;
        assert_eq!(resp.status(), 200, "GraphQL over HTTP answers 200");
        resp.json().await.unwrap()
    }

    /// The Prometheus text of `GET /metrics` (one recorder per process:
    /// it counts every test of this binary).
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Runs an operation that must succeed; returns `data`.
    pub async fn ok(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let r = self.gql(token, query, variables).await;
        assert!(r.get("errors").is_none(), "unexpected errors: {r}");
        r["data"].clone()
    }

    /// Signs up a new agency with its owner.
    pub async fn sign_up(&self, agency: &str, email: &str) -> Session {
        let d = self
            .ok(
                None,
                "mutation($i: SignUpInput!) { signUp(input: $i) {
                    accessToken refreshToken user { id } agency { id } } }",
                json!({ "i": { "agencyName": agency, "name": "Owner", "email": email, "password": PASSWORD } }),
            )
            .await;
        Session::from(&d["signUp"])
    }

    pub async fn create_workspace(&self, s: &Session, name: &str) -> String {
        let d = self
            .ok(
                Some(&s.access),
                "mutation($i: CreateWorkspaceInput!) { createWorkspace(input: $i) { id } }",
                json!({ "i": { "name": name, "timezone": "Europe/London" } }),
            )
            .await;
        d["createWorkspace"]["id"].as_str().unwrap().to_string()
    }

    /// A workspace (UTC) whose brand keyword is `keyword`: keyword-routed
    /// FEED and GENERIC messages mentioning it land there.
    pub async fn create_brand(&self, s: &Session, name: &str, keyword: &str) -> String {
        let d = self
            .ok(
                Some(&s.access),
                "mutation($i: CreateWorkspaceInput!) { createWorkspace(input: $i) { id } }",
                json!({ "i": { "name": name, "timezone": "UTC", "brandKeywords": [keyword] } }),
            )
            .await;
        d["createWorkspace"]["id"].as_str().unwrap().to_string()
    }

    /// Posts `{"events": events}` to a GENERIC channel's webhook URL, signed
    /// with the tests' secret (`generic-secret`); it must be accepted.
    pub async fn deliver_generic(&self, url: &str, events: Value) {
        let body = serde_json::to_vec(&json!({ "events": events })).unwrap();
        let sig = rapport_domain::ingest::signature::generic_sign(
            b"generic-secret",
            &body,
            chrono::Utc::now().timestamp(),
        );
        let r = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("x-rapport-signature", sig)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert_eq!(status, 200, "{}", r.text().await.unwrap_or_default());
    }

    /// Creates the workspace's default SLA policy ("Std") with the same
    /// `targets` for every priority; `extra` adds or overrides input fields
    /// (`name`, `warnAtPercent`, `businessHours`, `calendarId`). Returns its ID.
    pub async fn default_policy(
        &self,
        s: &Session,
        ws: &str,
        targets: Value,
        extra: Value,
    ) -> Value {
        let mut input = json!({ "workspaceId": ws, "name": "Std", "isDefault": true,
            "targets": { "urgent": targets, "high": targets, "normal": targets, "low": targets } });
        if let (Some(i), Some(e)) = (input.as_object_mut(), extra.as_object()) {
            i.extend(e.clone());
        }
        self.ok(
            Some(&s.access),
            "mutation($i: CreateSlaPolicyInput!) { createSlaPolicy(input: $i) { id } }",
            json!({ "i": input }),
        )
        .await["createSlaPolicy"]["id"]
            .clone()
    }

    /// Imports `events` (the GENERIC event format) into workspace `ws`
    /// through the `importMessages` mutation. All must be valid: a rejected
    /// one fails the test (a test importing nothing would pass unnoticed).
    pub async fn import_events(&self, s: &Session, ws: &str, events: Value) {
        let d = self
            .ok(
                Some(&s.access),
                "mutation($i: ImportMessagesInput!) { importMessages(input: $i) { rejected { index reason } } }",
                json!({ "i": { "workspaceId": ws, "events": events } }),
            )
            .await;
        let rejected = &d["importMessages"]["rejected"];
        assert_eq!(rejected, &json!([]), "events rejected by importMessages");
        self.answerable_imports(s, ws).await;
    }

    /// Gives workspace `ws`'s import channel a callback URL and secret, so
    /// that its conversations take replies (a reply on a channel that
    /// cannot publish is refused). Nothing listens there: a worker's
    /// attempts fail and are retried, which no test waits for.
    pub async fn answerable_imports(&self, s: &Session, ws: &str) {
        if !self.answerable.lock().unwrap().insert(ws.to_string()) {
            return;
        }
        let d = self
            .ok(
                Some(&s.access),
                "query($w: ID!) { channels(workspaceId: $w) { edges { node { id name } } } }",
                json!({ "w": ws }),
            )
            .await;
        let import = edges(&d["channels"])
            .into_iter()
            .find(|e| e["node"]["name"] == "Bulk import")
            .expect("the workspace's import channel");
        self.ok(
            Some(&s.access),
            "mutation($i: UpdateChannelInput!) { updateChannel(input: $i) { id } }",
            json!({ "i": { "id": import["node"]["id"], "secret": "import-callback-secret",
                           "callbackUrl": "http://127.0.0.1:9/replies" } }),
        )
        .await;
    }

    /// Connects a GENERIC channel to `ws`; returns its ID and webhook URL.
    pub async fn connect_generic(
        &self,
        s: &Session,
        ws: &str,
        name: &str,
        secret: &str,
    ) -> (String, String) {
        let d = self
            .ok(
                Some(&s.access),
                "mutation($w: ID!, $n: String!, $s: String!) { connectChannel(input: { workspaceId: $w, kind: GENERIC, name: $n, secret: $s }) { id webhookUrl } }",
                json!({ "w": ws, "n": name, "s": secret }),
            )
            .await;
        let c = &d["connectChannel"];
        (
            c["id"].as_str().unwrap().to_string(),
            c["webhookUrl"].as_str().unwrap().to_string(),
        )
    }

    /// Ana's and Bob's conversations in `ws` (one mention each, imported),
    /// each assigned to `member` and then resolved: they keep their
    /// assignee until they reopen. Their IDs, Ana's first.
    pub async fn resolved_while_assigned(
        &self,
        s: &Session,
        ws: &str,
        member: &str,
    ) -> (String, String) {
        self.import_events(s, ws, mention("a1", "ana", "my latte arrived cold"))
            .await;
        self.import_events(s, ws, mention("b1", "bob", "my order is late"))
            .await;
        let ana = self.conversation_of(s, ws, "ana").await;
        let bob = self.conversation_of(s, ws, "bob").await;
        for id in [&ana, &bob] {
            self.ok(
                Some(&s.access),
                "mutation($i: AssignConversationInput!) { assignConversation(input: $i) { id } }",
                json!({ "i": { "conversationId": id, "memberId": member } }),
            )
            .await;
            self.ok(
                Some(&s.access),
                "mutation($c: ID!) { resolveConversation(conversationId: $c) { status } }",
                json!({ "c": id }),
            )
            .await;
        }
        (ana, bob)
    }

    /// The ID of the workspace's conversation with the author `handle`.
    pub async fn conversation_of(&self, s: &Session, ws: &str, handle: &str) -> String {
        let d = self
            .ok(
                Some(&s.access),
                "query($w: ID!) { conversations(workspaceId: $w) { edges { node { id author { handle } } } } }",
                json!({ "w": ws }),
            )
            .await;
        edges(&d["conversations"])
            .into_iter()
            .find(|e| e["node"]["author"]["handle"] == handle)
            .map(|e| e["node"]["id"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no conversation with {handle}"))
    }

    /// Invites someone and accepts the invitation; returns their session
    /// and member ID.
    pub async fn add_member(
        &self,
        owner: &Session,
        email: &str,
        role: &str,
        workspaces: Option<Vec<String>>,
    ) -> (Session, String) {
        let d = self
            .ok(
                Some(&owner.access),
                "mutation($i: InviteMemberInput!) { inviteMember(input: $i) { member { id } invitationToken } }",
                json!({ "i": { "email": email, "name": "Member", "role": role, "workspaceIds": workspaces } }),
            )
            .await;
        let member = d["inviteMember"]["member"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let token = d["inviteMember"]["invitationToken"].as_str().unwrap();
        let a = self
            .ok(
                None,
                "mutation($i: AcceptInvitationInput!) { acceptInvitation(input: $i) {
                    accessToken refreshToken user { id } agency { id } } }",
                json!({ "i": { "token": token, "password": PASSWORD } }),
            )
            .await;
        (Session::from(&a["acceptInvitation"]), member)
    }
}

#[derive(Clone, Debug)]
pub struct Session {
    pub access: String,
    pub refresh: String,
    pub user_id: String,
    pub agency_id: String,
}

impl From<&Value> for Session {
    fn from(v: &Value) -> Self {
        Session {
            access: v["accessToken"].as_str().unwrap().into(),
            refresh: v["refreshToken"].as_str().unwrap().into(),
            user_id: v["user"]["id"].as_str().unwrap().into(),
            agency_id: v["agency"]["id"].as_str().unwrap().into(),
        }
    }
}

/// The value of one series (`name{labels}`, as Prometheus prints it) in
/// a `/metrics` text; 0 when it has not been counted yet.
pub fn metric_value(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// One GENERIC event for `importMessages`: `text` by author `who`
/// (also their handle), published now.
pub fn mention(id: &str, who: &str, text: &str) -> Value {
    json!([{ "id": id, "text": text, "published_at": chrono::Utc::now().to_rfc3339(),
             "author": { "id": who, "handle": who } }])
}

/// The `extensions.code` of the first error, if any.
pub fn code(resp: &Value) -> Option<&str> {
    resp["errors"][0]["extensions"]["code"].as_str()
}

pub fn edges(conn: &Value) -> Vec<Value> {
    conn["edges"].as_array().cloned().unwrap_or_default()
}

/// A benchmark knob from the environment, or its default.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A figure in kB from `/proc/<pid>/status` (VmHWM, VmRSS), 0 when unknown.
pub fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Fields of `/proc/<pid>/stat` after "pid (comm)", with the command name.
fn proc_stat(pid: &str) -> Option<(String, Vec<u64>)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_string();
    // Field 3 (state) is a letter: kept as 0 so indices stay those of proc(5) minus 3.
    let fields = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    Some((comm, fields))
}

/// CPU time of a process in clock ticks (1/100 s): user + system time, and
/// that of its children it has waited for.
pub fn cpu_ticks(pid: u32) -> u64 {
    proc_stat(&pid.to_string()).map_or(0, |(_, f)| times(&f))
}

/// utime + stime + cutime + cstime (fields 14 to 17 of proc(5)).
fn times(f: &[u64]) -> u64 {
    f.get(11..15).map_or(0, |t| t.iter().sum())
}

/// CPU time, in clock ticks, of the local PostgreSQL server: every
/// `postgres` process, and through the postmaster's children's time the
/// backends that ended in between. None when no server runs on this machine
/// (then a bench prints no PostgreSQL figure).
pub fn postgres_cpu_ticks() -> Option<u64> {
    let mut total = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if let Some((_, f)) = proc_stat(pid).filter(|(c, _)| c == "postgres") {
            *total.get_or_insert(0) += times(&f);
        }
    }
    total
}

/// PostgreSQL's CPU ticks since `start` (a `postgres_cpu_ticks()` reading).
pub fn postgres_cpu_since(start: Option<u64>) -> Option<u64> {
    start.zip(postgres_cpu_ticks()).map(|(a, b)| b - a)
}

/// Runs SQL that must succeed (benchmark set-up), naming it when it fails.
pub async fn exec(db: &sea_orm::DatabaseConnection, sql: &str) {
    use sea_orm::ConnectionTrait;
    db.execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{sql}"));
}
