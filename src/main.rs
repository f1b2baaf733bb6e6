//! `rapport`: the one binary. `serve` runs the API, `worker` the job
//! consumer, `migrate` applies migrations, `dev` does all three in one
//! process for a newcomer, and `schema` prints the GraphQL contract.

mod import;
mod seed;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use rapport_api::{AppState, Settings};
use rapport_domain::crypto::SecretBox;
use rapport_store::Kv;
use rapport_store::db::{self, DEFAULT_DATABASE_URL, backend_name};
use rapport_worker::deliveries::{Deliverer, DeliveryConfig};
use rapport_worker::feeds::{FeedConfig, FeedPoller};
use rapport_worker::publish::{PublishConfig, Publisher};
use rapport_worker::reconciler::{self, ReconcilerConfig};
use rapport_worker::sla::{SlaConfig, SlaEngine};
use rapport_worker::{Worker, WorkerConfig, handlers};
use sea_orm::DatabaseConnection;
use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::sync::watch;

// glibc's malloc spent a fifth of the API's CPU on a GraphQL page (many
// small, short-lived allocations across threads); mimalloc is built for that.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "rapport",
    version,
    about = "Social-media customer care for agencies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API (GraphQL at /graphql).
    Serve(Common),
    /// Run the Redis job worker.
    Worker(Common),
    /// Apply database migrations and exit.
    Migrate(DbArgs),
    /// Migrate, then run the API and the worker in one process.
    Dev(DevArgs),
    /// Import messages from a JSON Lines file (one GENERIC-schema event per
    /// line) into a workspace, with progress and a summary.
    Import {
        #[command(flatten)]
        db: DbArgs,
        /// The workspace's ID (as the API shows it).
        #[arg(long)]
        workspace: String,
        /// A GENERIC channel of the workspace to import through (its ID as
        /// the API shows it), so that events its webhook delivered count as
        /// duplicates; by default the workspace's own import channel.
        #[arg(long)]
        channel: Option<String>,
        file: std::path::PathBuf,
    },
    /// Fill the database with realistic demo data (agencies, owners,
    /// workspaces, SLA policies, templates, mentions, replies).
    Seed {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 2)]
        agencies: usize,
        #[arg(long, default_value_t = 3)]
        workspaces_per_agency: usize,
        #[arg(long, default_value_t = 5_000)]
        messages: usize,
        /// Share of conversations answered, in percent.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u8).range(0..=100))]
        replied_percent: u8,
        /// The generator's seed, to reproduce a data set (printed at the end).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Print the GraphQL schema (SDL), or write it to a file.
    Schema {
        #[arg(long)]
        write: Option<std::path::PathBuf>,
    },
}

#[derive(Args, Clone)]
struct DbArgs {
    /// PostgreSQL or SQLite URL. Default: an SQLite file `rapport.db` here.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    database_url: String,
}

#[derive(Args, Clone)]
struct DevArgs {
    #[command(flatten)]
    common: Common,
    /// Seed demo data first (2 agencies, 3 workspaces each, 2,000
    /// mentions) when the database has no agency yet.
    #[arg(long)]
    demo: bool,
}

#[derive(Args, Clone)]
struct Common {
    #[command(flatten)]
    db: DbArgs,
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Address the API listens on.
    #[arg(long, env = "RAPPORT_BIND", default_value = "127.0.0.1:8080")]
    bind: String,
    /// HS256 key for access tokens (at least 32 characters). Required by
    /// `serve` and `worker`; `dev` generates one when absent.
    #[arg(long, env = "RAPPORT_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// 32 bytes in base64 sealing channel secrets at rest. Required by
    /// `serve` and `worker`; `dev` generates one when absent.
    #[arg(long, env = "RAPPORT_SECRET_KEY", hide_env_values = true)]
    secret_key: Option<String>,
    /// Base URL platforms reach the API at (webhook URLs start with it).
    /// Default: http://<RAPPORT_BIND>.
    #[arg(long, env = "RAPPORT_PUBLIC_URL")]
    public_url: Option<String>,
    /// Seconds a job may stay unacknowledged on a worker before another
    /// worker claims it (the first is presumed dead).
    #[arg(long, env = "RAPPORT_CLAIM_IDLE_SECS", default_value_t = 60)]
    claim_idle_secs: u64,
    /// Worker: ingest jobs of one read handed over together, at most; each
    /// channel's among them are stored in one transaction.
    #[arg(long, env = "RAPPORT_INGEST_GROUP", default_value_t = 16)]
    ingest_group: usize,
    /// Worker: milliseconds to wait for more jobs after a read that brought
    /// fewer than a group, so that a steady trickle is stored in fewer,
    /// larger transactions (0: handle each read at once).
    #[arg(long, env = "RAPPORT_WORKER_LINGER_MS", default_value_t = 10)]
    worker_linger_ms: u64,
    /// Worker: units of one read (a group of ingest jobs, or one job of
    /// another kind) handled at the same time, each on its own database
    /// connection.
    #[arg(long, env = "RAPPORT_WORKER_CONCURRENCY", default_value_t = 8)]
    worker_concurrency: usize,
    /// Worker: groups of ingest jobs stored at the same time by this
    /// process, at most (within the worker concurrency). Each is a
    /// database transaction; in all, the workers' should not outnumber the
    /// database's cores (2 suits one worker process on a 2-core database;
    /// with several processes, fewer each).
    #[arg(long, env = "RAPPORT_INGEST_CONCURRENCY", default_value_t = 2)]
    ingest_concurrency: usize,
    /// Worker: let feed, webhook-subscription and GENERIC callback URLs
    /// reach private, loopback and link-local addresses (on-premises
    /// set-ups; off by default, so a tenant cannot reach internal hosts).
    #[arg(
        long,
        env = "RAPPORT_ALLOW_PRIVATE_URLS",
        default_value_t = false,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    allow_private_urls: bool,
    /// API: reverse proxies in front of it (addresses or networks,
    /// comma-separated, e.g. `10.0.0.0/8`), whose `X-Forwarded-For` names
    /// the client for per-IP limits. None by default: the TCP peer is the
    /// client, and the header (anyone can send it) is ignored.
    #[arg(
        long,
        env = "RAPPORT_TRUSTED_PROXIES",
        default_value = "",
        hide_default_value = true,
        value_parser = trusted_proxies
    )]
    trusted_proxies: TrustedProxies,
    /// API on PostgreSQL: milliseconds a session's query answer may be
    /// served again from memory while nothing of its agency changes (every
    /// change is seen at once; fields derived from the clock, such as an
    /// SLA's remaining minutes, are at most this old). 0 turns it off.
    #[arg(long, env = "RAPPORT_RESPONSE_CACHE_MS", default_value_t = 500)]
    response_cache_ms: u64,
    /// API on PostgreSQL: memory the kept answers may take, in MiB.
    #[arg(long, env = "RAPPORT_RESPONSE_CACHE_MB", default_value_t = 64)]
    response_cache_mb: usize,
    /// Worker: days a processed raw inbound event (the payload exactly as
    /// received) is kept; 0 keeps them for good. Dead letters and pending
    /// events are always kept.
    #[arg(
        long,
        env = "RAPPORT_RAW_EVENT_RETENTION_DAYS",
        default_value_t = 30,
        value_parser = retention_days
    )]
    raw_event_retention_days: u64,
    /// Prefix of every Redis key, so deployments can share one Redis.
    #[arg(long, env = "RAPPORT_REDIS_PREFIX", default_value = "rapport")]
    redis_prefix: String,
    /// Worker: base URL of the X API replies are published to.
    #[arg(long, env = "RAPPORT_X_API_URL", default_value = "https://api.x.com")]
    x_api_url: String,
    /// Worker: base URL of Meta's Graph API (Facebook and Instagram replies).
    #[arg(
        long,
        env = "RAPPORT_GRAPH_API_URL",
        default_value = "https://graph.facebook.com"
    )]
    graph_api_url: String,
}

/// `RAPPORT_RAW_EVENT_RETENTION_DAYS`: 0 (keep), or a week to a century.
/// Shorter, a platform still retrying a delivery (X and Meta retry for
/// days) could find its raw event gone and have it taken in again.
fn retention_days(raw: &str) -> Result<u64, String> {
    match raw.trim().parse::<u64>() {
        Ok(d) if d == 0 || (7..=36_500).contains(&d) => Ok(d),
        _ => Err(format!("{raw:?}: 0 (keep them), or 7 to 36500 days")),
    }
}

/// `RAPPORT_TRUSTED_PROXIES`, parsed: empty entries (a trailing comma, an
/// empty variable) are none.
#[derive(Clone, Debug)]
struct TrustedProxies(Vec<rapport_domain::client_ip::Cidr>);

fn trusted_proxies(raw: &str) -> Result<TrustedProxies, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| rapport_domain::client_ip::Cidr::parse(s).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()
        .map(TrustedProxies)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if std::env::var("RAPPORT_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    // reqwest (platform adapters) uses rustls with ring; install it once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match command {
        Command::Schema { write } => {
            let sdl = rapport_api::graphql::sdl();
            match write {
                Some(path) => std::fs::write(&path, sdl)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => print!("{sdl}"),
            }
            Ok(())
        }
        Command::Import {
            db,
            workspace,
            channel,
            file,
        } => {
            let conn = connect_db(&db.database_url).await?;
            require_migrated(&conn, &db.database_url).await?;
            import::run(&conn, &workspace, channel.as_deref(), &file).await
        }
        Command::Seed {
            common,
            agencies,
            workspaces_per_agency,
            messages,
            replied_percent,
            seed,
        } => {
            let args = seed::SeedArgs {
                agencies,
                workspaces_per_agency,
                messages,
                replied_percent,
                seed,
            };
            seed::check(&args)?;
            let secret = required_secret(&common)?;
            let key = required_key(&common)?;
            let (db, kv) = connect_all(&common).await?;
            db::migrate(&db).await.context("applying migrations")?;
            let public_url = common
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", common.bind));
            let state = AppState::new(db, kv, Settings::new(secret, key, public_url))?;
            seed::run(state, args).await
        }
        Command::Migrate(args) => {
            let db = connect_db(&args.database_url).await?;
            db::migrate(&db).await.context("applying migrations")?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Serve(c) => {
            let secret = required_secret(&c)?;
            let key = required_key(&c)?;
            let (db, kv) = connect_all(&c).await?;
            require_migrated(&db, &c.db.database_url).await?;
            serve(&c, db, kv, secret, key).await
        }
        Command::Worker(c) => {
            let key = required_key(&c)?;
            let (db, kv) = connect_all(&c).await?;
            require_migrated(&db, &c.db.database_url).await?;
            let (tx, rx) = watch::channel(false);
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!(
                    "stopping: finishing the work in hand (a second signal stops at once)"
                );
                let _ = tx.send(true);
                shutdown_signal().await;
                eprintln!("second signal: stopping at once");
                std::process::exit(130);
            });
            run_worker(db, kv, &c, &key, rx).await
        }
        Command::Dev(DevArgs { common: c, demo }) => {
            let secret = match &c.jwt_secret {
                Some(_) => required_secret(&c)?,
                None => {
                    let mut bytes = [0u8; 32];
                    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
                    eprintln!(
                        "note: RAPPORT_JWT_SECRET is not set; generated a throwaway one for this run \
                         (tokens stop working when rapport dev restarts)"
                    );
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
                }
            };
            let key = match &c.secret_key {
                Some(_) => required_key(&c)?,
                None => {
                    eprintln!(
                        "note: RAPPORT_SECRET_KEY is not set; generated a throwaway one for this run \
                         (channel secrets stored now cannot be opened after a restart)"
                    );
                    SecretBox::generate_base64()
                }
            };
            let (db, kv) = connect_all(&c).await?;
            db::migrate(&db).await.context("applying migrations")?;
            if demo {
                use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
                let agencies = rapport_store::entities::agency::Entity::find()
                    .count(&db)
                    .await?;
                if agencies == 0 {
                    let public_url = c
                        .public_url
                        .clone()
                        .unwrap_or_else(|| format!("http://{}", c.bind));
                    let state = AppState::new(
                        db.clone(),
                        kv.clone(),
                        Settings::new(secret.clone(), key.clone(), public_url),
                    )?;
                    seed::run(
                        state,
                        seed::SeedArgs {
                            agencies: 2,
                            workspaces_per_agency: 3,
                            messages: 2_000,
                            replied_percent: 60,
                            seed: None,
                        },
                    )
                    .await?;
                } else if let Some(unfinished) = rapport_store::entities::agency::Entity::find()
                    .filter(
                        rapport_store::entities::agency::Column::Name.ends_with(seed::SEEDING_MARK),
                    )
                    .one(&db)
                    .await?
                {
                    anyhow::bail!(
                        "the database holds an unfinished demo (\"{}\": an earlier seeding was stopped). \
                         Start from an empty database (delete rapport.db, or point DATABASE_URL at a new one) \
                         and run `rapport dev --demo` again, or run `rapport dev` to serve it as it is",
                        unfinished.name
                    );
                } else {
                    eprintln!("note: --demo skipped: the database already has agencies");
                }
            }
            let (tx, rx) = watch::channel(false);
            let mut worker = {
                let (db, kv, c, key) = (db.clone(), kv.clone(), c.clone(), key.clone());
                tokio::spawn(async move { run_worker(db, kv, &c, &key, rx).await })
            };
            let served = tokio::select! {
                served = serve(&c, db, kv, secret, key) => served,
                // The worker runs until told to stop: ending first, it
                // failed, and a dev server whose jobs never run would only
                // look alive.
                ended = &mut worker => {
                    ended.context("worker task")??;
                    anyhow::bail!("the worker stopped on its own");
                }
            };
            let _ = tx.send(true);
            worker.await.context("worker task")??;
            served
        }
    }
}

/// The consumer loop, the feed poller, the SLA engine, the webhook
/// deliverer, the reply publisher's sweep, the reconciler that re-enqueues
/// what Redis lost, and the compaction of report rollups.
async fn run_worker(
    db: DatabaseConnection,
    kv: Kv,
    c: &Common,
    secret_key: &str,
    mut outer: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // Every loop below finishes its pass when shutdown is signalled and is
    // waited for before the process ends: a reply publish or a webhook
    // delivery cut off between the platform's answer and its record would
    // be sent again by the next worker. The loops listen to a signal of
    // their own, raised by the outer one or by the consumer failing, so
    // that a failing consumer stops them the same way (dropped, they would
    // be cut off mid-pass).
    let (stop, shutdown) = watch::channel(false);
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !*outer.borrow() {
                if outer.changed().await.is_err() {
                    return;
                }
            }
            let _ = stop.send(true);
        });
    }
    let mut loops = tokio::task::JoinSet::new();
    loops.spawn(reconciler::run(
        db.clone(),
        kv.clone(),
        ReconcilerConfig {
            keep_processed: (c.raw_event_retention_days > 0).then(|| {
                std::time::Duration::from_secs(c.raw_event_retention_days.saturating_mul(86_400))
            }),
            ..ReconcilerConfig::default()
        },
        shutdown.clone(),
    ));
    loops.spawn(rapport_worker::rollups::run(
        db.clone(),
        std::time::Duration::from_secs(10),
        shutdown.clone(),
    ));
    let feeds = FeedPoller::new(
        db.clone(),
        kv.clone(),
        FeedConfig {
            allow_private: c.allow_private_urls,
            ..FeedConfig::default()
        },
    )?;
    loops.spawn(feeds.run(shutdown.clone()));
    let sla = SlaEngine {
        db: db.clone(),
        kv: kv.clone(),
        cfg: SlaConfig::default(),
    };
    loops.spawn(sla.run(shutdown.clone()));
    let secrets = std::sync::Arc::new(
        SecretBox::from_base64(secret_key).map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let deliverer = Deliverer::new(
        db.clone(),
        secrets.clone(),
        DeliveryConfig {
            allow_private: c.allow_private_urls,
            ..DeliveryConfig::default()
        },
    )?;
    loops.spawn(deliverer.run(shutdown.clone()));
    let publisher = Arc::new(Publisher::new(
        db.clone(),
        kv.clone(),
        secrets,
        PublishConfig {
            x_api: c.x_api_url.clone(),
            graph_api: c.graph_api_url.clone(),
            allow_private: c.allow_private_urls,
            ..PublishConfig::default()
        },
    )?);
    loops.spawn(publisher.clone().run(shutdown.clone()));
    let config = WorkerConfig {
        claim_idle: std::time::Duration::from_secs(c.claim_idle_secs.max(1)),
        group: c.ingest_group.max(1),
        linger: std::time::Duration::from_millis(c.worker_linger_ms),
        concurrency: c.worker_concurrency.max(1),
        // The worker clamps it to at least one.
        group_concurrency: c.ingest_concurrency,
        ..WorkerConfig::default()
    };
    let consumed = Worker::new(kv.clone(), handlers(db, kv, publisher), config)
        .run(shutdown)
        .await;
    if let Err(e) = &consumed {
        tracing::error!(error = %format!("{e:#}"), "the job consumer stopped; stopping the other loops");
    }
    let _ = stop.send(true);
    tracing::info!("waiting for the worker's loops to finish their passes");
    while let Some(done) = loops.join_next().await {
        if let Err(e) = done {
            tracing::error!(error = %e, "a worker loop failed");
        }
    }
    consumed
}

async fn serve(
    c: &Common,
    db: DatabaseConnection,
    kv: Kv,
    secret: String,
    key: String,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&c.bind)
        .with_context(|| format!("cannot listen on {} (RAPPORT_BIND)", c.bind))?;
    tracing::info!(
        "API on http://{}/graphql (GraphiQL in a browser)",
        listener.local_addr()?
    );
    let public_url = c.public_url.clone().unwrap_or_else(|| {
        format!(
            "http://{}",
            listener
                .local_addr()
                .map_or(c.bind.clone(), |a| a.to_string())
        )
    });
    let mut settings = Settings::new(secret, key, public_url);
    settings.trusted_proxies = c.trusted_proxies.0.clone();
    settings.response_cache_ttl = std::time::Duration::from_millis(c.response_cache_ms);
    settings.response_cache_bytes = c.response_cache_mb.saturating_mul(1024 * 1024);
    let state = AppState::new(db, kv, settings)?;
    rapport_api::http::server(state, listener)?.await?;
    Ok(())
}

fn required_secret(c: &Common) -> anyhow::Result<String> {
    match &c.jwt_secret {
        None => anyhow::bail!(
            "RAPPORT_JWT_SECRET is not set: set it to a random string of at least 32 characters \
             (e.g. `export RAPPORT_JWT_SECRET=$(openssl rand -base64 32)`), or use `rapport dev`"
        ),
        Some(s) if s.len() < 32 => {
            anyhow::bail!("RAPPORT_JWT_SECRET is too short: use at least 32 characters")
        }
        Some(s) => Ok(s.clone()),
    }
}

fn required_key(c: &Common) -> anyhow::Result<String> {
    let Some(key) = &c.secret_key else {
        anyhow::bail!(
            "RAPPORT_SECRET_KEY is not set: set it to 32 random bytes in base64 \
             (e.g. `export RAPPORT_SECRET_KEY=$(openssl rand -base64 32)`), or use `rapport dev`"
        );
    };
    SecretBox::from_base64(key).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(key.clone())
}

/// The URL without its password, for messages.
/// `url` fit to print: the password of its user part and of a
/// `password=` query parameter (both forms sqlx takes) replaced.
fn redacted(url: &str) -> String {
    let url = match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}@{}", &url[..s + 3], user, &url[at + 1..])
        }
        _ => url.to_string(),
    };
    let Some((base, query)) = url.split_once('?') else {
        return url;
    };
    let query: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => kv.to_string(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

async fn connect_db(url: &str) -> anyhow::Result<DatabaseConnection> {
    if !(url.starts_with("postgres://")
        || url.starts_with("postgresql://")
        || url.starts_with("sqlite:"))
    {
        anyhow::bail!(
            "DATABASE_URL {} is neither PostgreSQL (postgres://…) nor SQLite (sqlite://FILE?mode=rwc)",
            redacted(url)
        );
    }
    db::connect(url).await.map_err(|e| {
        let how = if url.starts_with("postgres") {
            "start it (`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`) \
             or point DATABASE_URL elsewhere"
        } else {
            "check that the directory is writable, or set DATABASE_URL"
        };
        anyhow::anyhow!(
            "cannot open {} at {}: {e}. {how}",
            backend_name(url),
            redacted(url)
        )
    })
}

async fn connect_redis(c: &Common) -> anyhow::Result<Kv> {
    Kv::connect(&c.redis_url, &c.redis_prefix).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach Redis at {}: {e}. Start it (`redis-server --daemonize yes`) or set REDIS_URL",
            redacted(&c.redis_url)
        )
    })
}

async fn connect_all(c: &Common) -> anyhow::Result<(DatabaseConnection, Kv)> {
    let db = connect_db(&c.db.database_url).await?;
    let kv = connect_redis(c).await?;
    Ok((db, kv))
}

/// Refuses a database whose schema is behind this binary (a new install
/// not migrated yet, or a deploy that skipped `rapport migrate`): ready
/// on `/readyz` while every query fails would be worse than not starting.
async fn require_migrated(db: &DatabaseConnection, url: &str) -> anyhow::Result<()> {
    let pending = match db::pending_migrations(db).await {
        Ok(n) => n,
        // The database has migrations this binary does not know: a newer
        // release migrated it (a rolling deploy). Migrations add, so this
        // one still runs.
        Err(e) if e.to_string().contains("is missing") => {
            tracing::warn!(error = %e, "the database is ahead of this binary; starting anyway");
            0
        }
        Err(e) => return Err(e).context("reading which migrations the database has"),
    };
    if pending > 0 {
        anyhow::bail!(
            "the database at {} is {pending} migration(s) behind this binary: run `rapport migrate` first",
            redacted(url)
        );
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn urls_are_printed_without_passwords() {
        assert_eq!(
            redacted("postgres://app:hunter2@db:5432/rapport"),
            "postgres://app@db:5432/rapport"
        );
        assert_eq!(
            redacted("postgres://db/rapport?user=app&password=hunter2&sslmode=require"),
            "postgres://db/rapport?user=app&password=***&sslmode=require"
        );
        assert_eq!(
            redacted("sqlite://rapport.db?mode=rwc"),
            "sqlite://rapport.db?mode=rwc"
        );
    }
}
