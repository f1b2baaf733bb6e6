//! The consumer loop over the job stream.

use crate::registry::{ManyFn, Permanent, Registry};
use anyhow::Context;
use futures_util::StreamExt;
use rapport_domain::retry::Backoff;
use rapport_store::Kv;
use rapport_store::jobs::{DEAD_LETTERS, GROUP, STREAM};

/// Dead letters kept in Redis, about (`MAXLEN ~`).
const DEAD_LETTERS_KEPT: usize = 10_000;
use redis::Value;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Unique per worker process (host and pid by default).
    pub consumer: String,
    /// Longest wait for new jobs before checking for shutdown and stale jobs.
    pub block: Duration,
    pub batch: usize,
    /// A job pending this long on another consumer is presumed orphaned
    /// (its worker crashed) and is claimed.
    pub claim_idle: Duration,
    /// Deliveries after which a failing job goes to the dead-letter stream.
    pub max_deliveries: u64,
    /// Units of one batch processed at the same time.
    pub concurrency: usize,
    /// At most this many jobs of one kind go to a handler together (for
    /// kinds registered with `Registry::on_many`).
    pub group: usize,
    /// Such groups (ingestion's) handled at the same time in this process,
    /// at most, within `concurrency`. Each is a database transaction that
    /// keeps a PostgreSQL backend busy: more of them at once than the
    /// database has cores to spare store no faster and make the webhooks'
    /// inserts wait longer for a CPU (BENCHMARKS.md, fifteenth and
    /// sixteenth sittings: on two cores, one process at 2 is best).
    /// Jobs of other kinds (reply deliveries, which hand their attempt to
    /// the publisher and return) are not held back by it.
    pub group_concurrency: usize,
    /// After a read that brought fewer than `group` jobs, how long to wait
    /// for more before handling them: under a steady trickle, larger groups
    /// mean fewer transactions and commits for the same messages, at the
    /// cost of this much delay. Zero handles every read at once.
    pub linger: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            consumer: format!(
                "{}-{}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into()),
                std::process::id()
            ),
            block: Duration::from_secs(2),
            batch: 64,
            claim_idle: Duration::from_secs(60),
            max_deliveries: 5,
            concurrency: 8,
            group: 16,
            group_concurrency: 2,
            linger: Duration::from_millis(10),
        }
    }
}

pub struct Worker {
    kv: Kv,
    registry: Registry,
    config: WorkerConfig,
    /// Permits for groups in hand (`group_concurrency`).
    group_permits: tokio::sync::Semaphore,
}

/// Whether the consumer loop goes on.
enum Flow {
    Go,
    Stop,
}

/// What the consumer loop remembers between rounds.
#[derive(Default)]
struct Rounds {
    last_claim: Option<std::time::Instant>,
}

/// One job read from the stream.
struct Job {
    id: String,
    kind: String,
    payload: String,
}

/// What runs as one: a job, or jobs of one kind handled together.
enum Unit {
    One(Job),
    Many(ManyFn, Vec<Job>),
}

/// A job's outcome; `Err((error, permanent))`: a permanent failure is not retried.
type Outcome = Result<(), (String, bool)>;

/// A job whose payload is not JSON: retrying cannot help.
fn unreadable() -> Outcome {
    Err(("payload is not JSON".to_string(), true))
}

fn outcome_of(r: anyhow::Result<()>) -> Outcome {
    r.map_err(|e| {
        let permanent = e.downcast_ref::<Permanent>().is_some();
        (format!("{e:#}"), permanent)
    })
}

impl Worker {
    pub fn new(kv: Kv, registry: Registry, config: WorkerConfig) -> Self {
        Self {
            kv,
            registry,
            group_permits: tokio::sync::Semaphore::new(
                config
                    .group_concurrency
                    .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
            ),
            config,
        }
    }

    /// Runs until `shutdown` turns true; the batch in hand is finished first.
    /// Only the first connection's failure ends it (a configuration error);
    /// later Redis or database errors are logged, counted and retried with
    /// backoff on a fresh connection, so a Redis restart or flush (which
    /// also loses the consumer group) does not stop ingestion for good.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let stream = self.kv.key(STREAM);
        let mut conn = self.connect(&stream).await?;
        tracing::info!(consumer = %self.config.consumer, stream = %stream, "worker started");
        let retry = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(5),
            max_attempts: i32::MAX,
        };
        let mut failures = 0;
        let mut rounds = Rounds::default();
        while !*shutdown.borrow() {
            match self
                .round(&mut conn, &stream, &mut shutdown, &mut rounds)
                .await
            {
                Ok(Flow::Go) => failures = 0,
                Ok(Flow::Stop) => break,
                Err(e) => {
                    failures += 1;
                    let wait = retry.after(failures).unwrap_or(retry.max);
                    tracing::error!(error = %format!("{e:#}"), failures, retry_in_ms = wait.as_millis() as u64, "worker round failed; retrying");
                    metrics::counter!("rapport_worker_errors_total").increment(1);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => break,
                    }
                    match self.connect(&stream).await {
                        Ok(c) => conn = c,
                        Err(e) => {
                            tracing::warn!(error = %format!("{e:#}"), "worker reconnecting to Redis")
                        }
                    }
                }
            }
        }
        tracing::info!(consumer = %self.config.consumer, "worker stopped");
        Ok(())
    }

    /// A connection for blocking reads, with the consumer group in place
    /// (created with the stream if either is missing).
    async fn connect(&self, stream: &str) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let mut conn = self
            .kv
            .blocking_conn()
            .await
            .context("connecting the worker to Redis")?;
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        if let Err(e) = created
            && e.code() != Some("BUSYGROUP")
        {
            return Err(e).context("creating the worker consumer group");
        }
        Ok(conn)
    }

    /// One read (orphans claimed now and then, a linger for a fuller
    /// group) and the batch it brought, handled to the end.
    async fn round(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        stream: &str,
        shutdown: &mut watch::Receiver<bool>,
        rounds: &mut Rounds,
    ) -> anyhow::Result<Flow> {
        // Orphans are looked for now and then, not before every read: a
        // job becomes one only after `claim_idle` anyway.
        let claim_every = (self.config.claim_idle / 2).min(Duration::from_secs(1));
        // Jobs in hand must not wait so long that another worker claims them.
        let linger = self.config.linger.min(self.config.claim_idle / 4);
        let mut jobs = Vec::new();
        if rounds.last_claim.is_none_or(|t| t.elapsed() >= claim_every) {
            rounds.last_claim = Some(std::time::Instant::now());
            jobs = self.claim_orphans(conn, stream).await?;
        }
        if jobs.is_empty() {
            let read = self.read(conn, stream, self.config.batch, true);
            tokio::select! {
                r = read => jobs = r?,
                _ = shutdown.changed() => return Ok(Flow::Stop),
            }
            // Jobs in hand are handled whatever happens here: a failed
            // second read or a shutdown only cuts the wait short.
            if !jobs.is_empty() && jobs.len() < self.config.group && !linger.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(linger) => {}
                    _ = shutdown.changed() => {}
                }
                let room = self.config.batch.saturating_sub(jobs.len());
                if room > 0 {
                    match self.read(conn, stream, room, false).await {
                        Ok(more) => jobs.extend(more),
                        Err(e) => {
                            tracing::warn!(error = %e, "reading more jobs after the linger")
                        }
                    }
                }
            }
        }
        // A batch runs concurrently, in units: one job, or up to `group`
        // jobs of a kind whose handler takes them together. Each job is
        // acknowledged on its own when done, so a crash mid-batch
        // redelivers only unfinished ones; one that could not be settled
        // stays pending and is claimed again later.
        let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
        let work = futures_util::stream::iter(self.units(jobs))
            .map(|unit| {
                let mut conn = conn.clone();
                async move { self.process(&mut conn, stream, unit).await }
            })
            .buffer_unordered(self.config.concurrency.max(1))
            .collect::<Vec<anyhow::Result<()>>>();
        let results = self.keeping_claims(conn, stream, &ids, work).await;
        results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        Ok(Flow::Go)
    }

    /// Runs `work` on the jobs `ids` while claiming them for this consumer
    /// again every third of `claim_idle` (which resets their idle time, not
    /// their delivery count): a batch that takes longer than `claim_idle`
    /// (big payloads, a slow database) is not taken for a crashed worker's
    /// and run again by another, nor dead-lettered early for the deliveries
    /// that adds up. Acknowledged jobs are no longer pending and are left
    /// alone; one another worker did take meanwhile (this one stalled past
    /// `claim_idle`) comes back here, and it ran twice either way, which
    /// jobs are made to bear. Renewed for ten times `claim_idle` at most: a
    /// handler hanging for good lets its jobs go to another worker, as a
    /// crashed one does.
    async fn keeping_claims<T>(
        &self,
        conn: &redis::aio::MultiplexedConnection,
        stream: &str,
        ids: &[String],
        work: impl Future<Output = T>,
    ) -> T {
        let every = self.config.claim_idle / 3;
        if ids.is_empty() || every.is_zero() {
            return work.await;
        }
        // Beside the work, not between its polls: a renewal waiting on a
        // stalled Redis must not hold the batch's transactions open.
        let renew = async {
            let start = tokio::time::Instant::now();
            let mut tick = tokio::time::interval_at(start + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while start.elapsed() < self.config.claim_idle * 10 {
                tick.tick().await;
                let mut c = conn.clone();
                let mut cmd = redis::cmd("XCLAIM");
                cmd.arg(stream)
                    .arg(GROUP)
                    .arg(&self.config.consumer)
                    .arg(0)
                    .arg(ids)
                    .arg("JUSTID");
                match tokio::time::timeout(every, cmd.query_async::<Value>(&mut c)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "keeping the jobs in hand claimed failed")
                    }
                    Err(_) => tracing::warn!("keeping the jobs in hand claimed timed out"),
                }
            }
            tracing::warn!(
                jobs = ids.len(),
                "a batch outlived its claim renewals; its jobs may be run again elsewhere"
            );
            std::future::pending::<()>().await;
        };
        tokio::select! {
            out = work => out,
            () = renew => unreachable!("renewal never ends"),
        }
    }

    /// New jobs for this consumer, at most `count`; waits up to `block`
    /// for the first when `wait`, otherwise returns what is there.
    async fn read(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        stream: &str,
        count: usize,
        wait: bool,
    ) -> anyhow::Result<Vec<Job>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(&self.config.consumer)
            .arg("COUNT")
            .arg(count);
        if wait {
            cmd.arg("BLOCK").arg(self.config.block.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(stream).arg(">");
        let reply = cmd
            .query_async::<Value>(conn)
            .await
            .context("reading the job stream")?;
        Ok(parse_read(reply))
    }

    async fn claim_orphans(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        stream: &str,
    ) -> anyhow::Result<Vec<Job>> {
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(stream)
            .arg(GROUP)
            .arg(&self.config.consumer)
            .arg(self.config.claim_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(self.config.batch)
            .query_async(conn)
            .await
            .context("claiming orphaned jobs")?;
        // [next-cursor, [entries...], [deleted ids...]]
        match reply {
            Value::Array(mut parts) if parts.len() >= 2 => Ok(parse_entries(parts.swap_remove(1))),
            _ => Ok(Vec::new()),
        }
    }

    /// Splits a batch into units, in stream order within each unit.
    fn units(&self, jobs: Vec<Job>) -> Vec<Unit> {
        let mut units = Vec::new();
        let mut together: Vec<(String, ManyFn, Vec<Job>)> = Vec::new();
        for job in jobs {
            let Some(handler) = self.registry.many(&job.kind) else {
                units.push(Unit::One(job));
                continue;
            };
            match together.iter_mut().find(|(k, ..)| *k == job.kind) {
                Some((_, _, jobs)) => jobs.push(job),
                None => together.push((job.kind.clone(), handler, vec![job])),
            }
        }
        for (_, handler, jobs) in together {
            let mut jobs = jobs.into_iter().peekable();
            while jobs.peek().is_some() {
                let chunk: Vec<Job> = jobs.by_ref().take(self.config.group.max(1)).collect();
                units.push(Unit::Many(handler.clone(), chunk));
            }
        }
        units
    }

    async fn process(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        stream: &str,
        unit: Unit,
    ) -> anyhow::Result<()> {
        match unit {
            Unit::One(job) => {
                let payload: Option<serde_json::Value> = serde_json::from_str(&job.payload).ok();
                let outcome = match (self.registry.get(&job.kind), &payload) {
                    (None, _) => Err((format!("no handler for job kind {:?}", job.kind), true)),
                    (_, None) => unreadable(),
                    (Some(handler), Some(p)) => outcome_of(handler(p.clone()).await),
                };
                self.settle(conn, stream, job, payload, outcome).await
            }
            Unit::Many(handler, jobs) => {
                let payloads: Vec<Option<serde_json::Value>> = jobs
                    .iter()
                    .map(|j| serde_json::from_str(&j.payload).ok())
                    .collect();
                let readable: Vec<serde_json::Value> = payloads.iter().flatten().cloned().collect();
                let expected = readable.len();
                let results = if readable.is_empty() {
                    Vec::new()
                } else {
                    // Only the handler's transaction waits for a permit (not
                    // the stream of units, so jobs of other kinds in the same
                    // read go on meanwhile, nor the settling after it). The
                    // semaphore is never closed.
                    let _permit = self.group_permits.acquire().await?;
                    handler(readable).await
                };
                // Results pair with jobs by position: a handler that miscounts
                // cannot say which job a result is for, so none counts.
                let mut results = if results.len() == expected {
                    results.into_iter().map(outcome_of).collect()
                } else {
                    tracing::error!(kind = %jobs[0].kind, expected, got = results.len(), "handler returned a wrong number of results");
                    vec![Err(("the handler miscounted its results".to_string(), false)); expected]
                }
                .into_iter();
                let mut first_error = None;
                for (job, payload) in jobs.into_iter().zip(payloads) {
                    let outcome = match &payload {
                        None => unreadable(),
                        Some(_) => results
                            .next()
                            .unwrap_or_else(|| Err(("no result for this job".to_string(), false))),
                    };
                    // Every job is settled even if one fails to be.
                    if let Err(e) = self.settle(conn, stream, job, payload, outcome).await {
                        first_error.get_or_insert(e);
                    }
                }
                first_error.map_or(Ok(()), Err)
            }
        }
    }

    /// Acknowledges a job done, or retries or dead-letters a failed one.
    async fn settle(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        stream: &str,
        job: Job,
        payload: Option<serde_json::Value>,
        outcome: Outcome,
    ) -> anyhow::Result<()> {
        let dead = match &outcome {
            Ok(()) => false,
            Err((why, permanent)) => {
                let deliveries = self.deliveries(conn, stream, &job.id).await?;
                tracing::warn!(job = %job.id, kind = %job.kind, deliveries, error = %why, "job failed");
                metrics::counter!("rapport_jobs_failed_total", "kind" => job.kind.clone())
                    .increment(1);
                *permanent || deliveries >= self.config.max_deliveries
            }
        };
        if dead {
            let why = outcome
                .as_ref()
                .err()
                .map_or(String::new(), |e| e.0.clone());
            if let (Some(on_dead), Some(p)) = (self.registry.dead(&job.kind), payload) {
                // Record the failure where users see it before giving up on
                // the job; if that fails, the job stays pending and returns.
                on_dead(p, why.clone()).await?;
            }
            // Capped: the database keeps every failure where users see it
            // (a raw event FAILED, a reply FAILED); this is for operators.
            redis::cmd("XADD")
                .arg(self.kv.key(DEAD_LETTERS))
                .arg("MAXLEN")
                .arg("~")
                .arg(DEAD_LETTERS_KEPT)
                .arg("*")
                .arg("id")
                .arg(&job.id)
                .arg("kind")
                .arg(&job.kind)
                .arg("payload")
                .arg(&job.payload)
                .arg("error")
                .arg(&why)
                .query_async::<()>(conn)
                .await?;
        }
        if outcome.is_ok() || dead {
            // Acknowledge only when done with it: a crash before this line
            // means another delivery, which handlers tolerate. Then delete
            // it: the group is the stream's only reader, and an entry kept
            // after its acknowledgement only grows Redis's memory.
            redis::pipe()
                .cmd("XACK")
                .arg(stream)
                .arg(GROUP)
                .arg(&job.id)
                .ignore()
                .cmd("XDEL")
                .arg(stream)
                .arg(&job.id)
                .ignore()
                .query_async::<()>(conn)
                .await?;
            metrics::counter!("rapport_jobs_done_total", "kind" => job.kind.clone(), "dead" => dead.to_string())
                .increment(1);
        }
        Ok(())
    }

    async fn deliveries(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        stream: &str,
        id: &str,
    ) -> anyhow::Result<u64> {
        // XPENDING key group start end count -> [[id, consumer, idle, deliveries]]
        let reply: Value = redis::cmd("XPENDING")
            .arg(stream)
            .arg(GROUP)
            .arg(id)
            .arg(id)
            .arg(1)
            .query_async(conn)
            .await?;
        Ok(match reply {
            Value::Array(rows) => rows
                .into_iter()
                .find_map(|row| match row {
                    Value::Array(f) if f.len() == 4 => match &f[3] {
                        Value::Int(n) => Some(*n as u64),
                        _ => None,
                    },
                    _ => None,
                })
                .unwrap_or(1),
            _ => 1,
        })
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// XREADGROUP reply: [[stream, [entries...]]] (RESP2) or a map (RESP3).
fn parse_read(v: Value) -> Vec<Job> {
    match v {
        Value::Array(streams) => streams
            .into_iter()
            .flat_map(|s| match s {
                Value::Array(mut kv) if kv.len() == 2 => parse_entries(kv.swap_remove(1)),
                _ => Vec::new(),
            })
            .collect(),
        Value::Map(streams) => streams
            .into_iter()
            .flat_map(|(_, entries)| parse_entries(entries))
            .collect(),
        _ => Vec::new(),
    }
}

/// Entries: [[id, [field, value, ...]], ...]. Deleted entries have nil fields.
fn parse_entries(v: Value) -> Vec<Job> {
    let Value::Array(entries) = v else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter_map(|e| {
            let Value::Array(parts) = e else { return None };
            let id = text(parts.first()?)?;
            let mut kind = String::new();
            let mut payload = String::from("null");
            if let Some(Value::Array(fields)) = parts.get(1) {
                for pair in fields.chunks(2) {
                    match (
                        pair.first().and_then(text).as_deref(),
                        pair.get(1).and_then(text),
                    ) {
                        (Some("kind"), Some(k)) => kind = k,
                        (Some("payload"), Some(p)) => payload = p,
                        _ => {}
                    }
                }
            }
            Some(Job { id, kind, payload })
        })
        .collect()
}
