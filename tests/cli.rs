//! The `rapport` binary as a newcomer meets it: `rapport dev` in an empty
//! directory, then sign up, create two workspaces and list them over HTTP;
//! and one clear line when a dependency is missing.

mod common;

use common::*;
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::Duration;

fn rapport() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rapport"));
    c.env_remove("DATABASE_URL")
        .env_remove("RAPPORT_JWT_SECRET")
        .env_remove("RAPPORT_SECRET_KEY")
        .env("RUST_LOG", "warn");
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `cmd` until it exits, with its stderr; None if it is still
/// running after `limit` (it is killed then).
async fn exit_within(
    mut cmd: Command,
    limit: Duration,
) -> Option<(std::process::ExitStatus, String)> {
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    tokio::task::spawn_blocking(move || {
        let mut child = Child(cmd.spawn().unwrap());
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                let mut err = String::new();
                use std::io::Read;
                child
                    .0
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                return Some((status, err));
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapport_dev_runs_the_newcomer_session() {
    install_crypto();
    let dir = TempDir(
        std::env::temp_dir().join(format!("rapport-dev-{}", uuid::Uuid::new_v4().simple())),
    );
    std::fs::create_dir_all(&dir.0).unwrap();
    let redis = TestRedis::new();
    let port = free_port();
    let mut cmd = rapport();
    cmd.arg("dev")
        .current_dir(&dir.0)
        .env("RAPPORT_BIND", format!("127.0.0.1:{port}"))
        .env("RAPPORT_REDIS_PREFIX", &redis.prefix)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // Same command on the production backend; declared before the child so
    // the process is stopped before its database is dropped.
    let _db = if is_postgres() {
        let db = TestDb::new().await;
        cmd.env("DATABASE_URL", &db.url);
        Some(db)
    } else {
        None
    };
    let _child = Child(cmd.spawn().unwrap());
    let base = format!("http://127.0.0.1:{port}");
    // Each probe gives up after 2 s, so the loop's limit holds.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut ready = false;
    // Up to 60 s: fresh migrations on a machine busy with other tests.
    for _ in 0..600 {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "rapport dev did not become ready");
    if !is_postgres() {
        assert!(
            dir.0.join("rapport.db").exists(),
            "SQLite file created in the working directory"
        );
    }
    let gql = |token: Option<String>, q: &'static str, v: serde_json::Value| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let mut req = client
                .post(format!("{base}/graphql"))
                .json(&json!({ "query": q, "variables": v }));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let body: serde_json::Value = req.send().await.unwrap().json().await.unwrap();
            assert!(body.get("errors").is_none(), "{body}");
            body["data"].clone()
        }
    };
    let d = gql(
        None,
        "mutation { signUp(input: { agencyName: \"Acme\", name: \"Ana\", email: \"ana@acme.test\", password: \"correct horse battery\" }) { accessToken } }",
        json!({}),
    )
    .await;
    let token = d["signUp"]["accessToken"].as_str().unwrap().to_string();
    for name in ["Brew Co", "Bean Bros"] {
        gql(
            Some(token.clone()),
            "mutation($n: String!) { createWorkspace(input: { name: $n, timezone: \"Europe/Berlin\" }) { id } }",
            json!({ "n": name }),
        )
        .await;
    }
    let d = gql(
        Some(token),
        "{ workspaces { edges { node { name } } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        d["workspaces"]["edges"],
        json!([{ "node": { "name": "Brew Co" } }, { "node": { "name": "Bean Bros" } }])
    );
}

fn one_line_error(args: &[&str], envs: &[(&str, &str)]) -> String {
    let mut c = rapport();
    c.args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "one clear line, got: {err}");
    assert!(!err.contains("panicked"), "{err}");
    lines[0].to_string()
}

#[test]
fn missing_secret_or_unreachable_services_give_one_clear_line() {
    let e = one_line_error(&["serve"], &[]);
    assert!(e.contains("RAPPORT_JWT_SECRET"), "{e}");
    let secret = ("RAPPORT_JWT_SECRET", JWT_SECRET);
    let e = one_line_error(&["serve"], &[secret]);
    assert!(e.contains("RAPPORT_SECRET_KEY"), "{e}");
    let e = one_line_error(&["serve"], &[secret, ("RAPPORT_SECRET_KEY", "c2hvcnQ=")]);
    assert!(e.contains("32 bytes"), "{e}");
    let key = ("RAPPORT_SECRET_KEY", SECRET_KEY);
    let pg = (
        "DATABASE_URL",
        "postgres://postgres:hunter2@127.0.0.1:1/none",
    );
    let e = one_line_error(&["serve"], &[secret, key, pg]);
    assert!(
        e.contains("PostgreSQL") && e.contains("pg_ctlcluster"),
        "{e}"
    );
    assert!(!e.contains("hunter2"), "passwords are not printed: {e}");
    let dir = std::env::temp_dir().join(format!("rapport-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = TempDir(dir.clone());
    let sqlite = format!("sqlite://{}/x.db?mode=rwc", dir.display());
    let e = one_line_error(
        &["worker"],
        &[
            secret,
            key,
            ("DATABASE_URL", sqlite.as_str()),
            ("REDIS_URL", "redis://127.0.0.1:1"),
        ],
    );
    assert!(e.contains("Redis") && e.contains("redis-server"), "{e}");
    // A database not migrated yet: refused with what to run, rather than
    // ready on /readyz while every query fails.
    let redis = redis_url();
    for cmd in ["serve", "worker"] {
        let e = one_line_error(
            &[cmd],
            &[
                secret,
                key,
                ("DATABASE_URL", sqlite.as_str()),
                ("REDIS_URL", redis.as_str()),
            ],
        );
        assert!(e.contains("rapport migrate"), "{cmd}: {e}");
    }
    // Sizes that cannot be meant are refused before anything connects (no
    // secret, no database given here).
    for sizes in [["0", "3"], ["4294967296", "4294967296"]] {
        let e = one_line_error(
            &[
                "seed",
                "--agencies",
                sizes[0],
                "--workspaces-per-agency",
                sizes[1],
            ],
            &[],
        );
        assert!(e.contains("--agencies"), "{e}");
    }
    let e = one_line_error(&["serve"], &[secret, key, ("DATABASE_URL", "rapport.db")]);
    assert!(e.contains("neither PostgreSQL"), "{e}");
    let e = one_line_error(
        &["serve"],
        &[
            secret,
            key,
            ("RAPPORT_TRUSTED_PROXIES", "10.0.0.0/8, ,the-balancer,"),
        ],
    );
    assert!(
        e.contains("the-balancer") && e.contains("not an IP address"),
        "{e}"
    );
    // A retention shorter than platforms retry: refused.
    let e = one_line_error(&["worker"], &[("RAPPORT_RAW_EVENT_RETENTION_DAYS", "3")]);
    assert!(e.contains("7 to 36500"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapport_seed_fills_a_database_with_realistic_data() {
    use rapport_store::entities::{
        author, conversation, message, reply_template, sla_policy, workspace,
    };
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    let app = TestApp::start().await;
    let out = rapport()
        .args([
            "seed",
            "--agencies",
            "2",
            "--workspaces-per-agency",
            "2",
            "--messages",
            "1000",
            // A fixed seed: the distribution checks below hold for this
            // data set every time (a random one missed the >1000-follower
            // author about once in a hundred runs).
            "--seed",
            "20261201",
        ])
        .env("DATABASE_URL", &app.db.url)
        .env("REDIS_URL", redis_url())
        .env("RAPPORT_REDIS_PREFIX", &app.redis.prefix)
        .env("RAPPORT_JWT_SECRET", JWT_SECRET)
        .env("RAPPORT_SECRET_KEY", SECRET_KEY)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1000 messages"), "{stdout}");
    assert!(stdout.contains("(--seed 20261201)"), "{stdout}");
    // The seeder is no client of the sign-up limit (100 per client and
    // quarter of an hour): as one client, seeding 101 agencies, or 100
    // twice in a quarter of an hour, stopped at RATE_LIMITED. Each sign-up
    // counts against a window of its own.
    let mut kv = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let used: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:rl:signup:ip:*", app.redis.prefix))
        .query_async(&mut kv)
        .await
        .unwrap();
    assert_eq!(used.len(), 2, "one window per sign-up: {used:?}");
    assert!(stdout.contains("rapport-demo-password"));
    let db = &app.state.db;
    // Named as finished only at the end (an interrupted run says so).
    let mut names: Vec<String> = rapport_store::entities::agency::Entity::find()
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    names.sort();
    assert_eq!(names, ["Demo Agency 1", "Demo Agency 2"]);
    assert_eq!(workspace::Entity::find().count(db).await.unwrap(), 4);
    assert_eq!(sla_policy::Entity::find().count(db).await.unwrap(), 4);
    assert_eq!(reply_template::Entity::find().count(db).await.unwrap(), 4);
    let inbound = message::Entity::find()
        .filter(message::Column::Direction.eq("INBOUND"))
        .count(db)
        .await
        .unwrap();
    assert_eq!(inbound, 1000);
    let answered = conversation::Entity::find()
        .filter(conversation::Column::FirstRespondedAt.is_not_null())
        .count(db)
        .await
        .unwrap();
    let conversations = conversation::Entity::find().count(db).await.unwrap();
    assert!(conversations < 1000, "threads join: {conversations}");
    assert!(
        answered > conversations / 3 && answered < conversations,
        "{answered}/{conversations}"
    );
    // Each seeded reply met its first-response target, as a real one does:
    // the demo's compliance report has the events.
    let met = rapport_store::entities::sla_event::Entity::find()
        .filter(rapport_store::entities::sla_event::Column::Kind.eq("SLA_MET"))
        .count(db)
        .await
        .unwrap();
    assert!(met >= answered, "{met} SLA_MET events, {answered} answered");
    // Power law: the loudest author writes far more than the average one.
    let authors = author::Entity::find().all(db).await.unwrap();
    let mut per_author = std::collections::HashMap::new();
    for m in message::Entity::find()
        .filter(message::Column::Direction.eq("INBOUND"))
        .all(db)
        .await
        .unwrap()
    {
        *per_author.entry(m.author_id).or_insert(0usize) += 1;
    }
    let max = per_author.values().max().copied().unwrap_or(0);
    assert!(
        max * authors.len() > 5 * 1000,
        "skewed: max {max} of {} authors",
        authors.len()
    );
    let followers: Vec<i64> = authors.iter().map(|a| a.follower_count).collect();
    assert!(
        followers.iter().any(|f| *f > 1000) && followers.iter().any(|f| *f < 100),
        "{followers:?}"
    );
}

/// `rapport dev` whose worker cannot start (its job stream's key holds
/// something else, as a foreign or older deployment on the same Redis
/// prefix might leave): the process ends with the error, rather than
/// serving webhooks whose jobs never run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapport_dev_ends_when_its_worker_cannot_run() {
    let dir = TempDir(
        std::env::temp_dir().join(format!("rapport-dev-{}", uuid::Uuid::new_v4().simple())),
    );
    std::fs::create_dir_all(&dir.0).unwrap();
    let redis = TestRedis::new();
    let kv = redis.kv().await;
    let _: () = redis::cmd("SET")
        .arg(kv.key("jobs"))
        .arg("not a stream")
        .query_async(&mut kv.conn())
        .await
        .unwrap();
    let mut cmd = rapport();
    cmd.arg("dev")
        .current_dir(&dir.0)
        .env("RAPPORT_BIND", format!("127.0.0.1:{}", free_port()))
        .env("RAPPORT_REDIS_PREFIX", &redis.prefix);
    let out = exit_within(cmd, Duration::from_secs(30)).await;
    let (status, err) = out.expect("rapport dev ended");
    assert!(!status.success(), "{err}");
    assert!(err.contains("error:") && err.contains("WRONGTYPE"), "{err}");
}

/// `rapport dev --demo` on a database whose demo seeding was stopped
/// half-way (its agencies still named "… (seeding)") refuses to serve it
/// as a demo and says how to start again, instead of skipping the seeding
/// in silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapport_dev_demo_refuses_an_unfinished_demo() {
    let app = TestApp::start().await;
    app.sign_up(
        "Demo Agency 1 (seeding)",
        "owner+abc123-0@demo.rapport.test",
    )
    .await;
    let mut cmd = rapport();
    cmd.args(["dev", "--demo"])
        .env("DATABASE_URL", &app.db.url)
        .env("REDIS_URL", redis_url())
        .env("RAPPORT_REDIS_PREFIX", &app.redis.prefix)
        .env("RAPPORT_BIND", format!("127.0.0.1:{}", free_port()))
        .env("RAPPORT_JWT_SECRET", JWT_SECRET)
        .env("RAPPORT_SECRET_KEY", SECRET_KEY);
    let (status, err) = exit_within(cmd, Duration::from_secs(60))
        .await
        .expect("rapport dev --demo ended");
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("unfinished demo (\"Demo Agency 1 (seeding)\"")
            && err.contains("rapport dev --demo"),
        "{err}"
    );
}
