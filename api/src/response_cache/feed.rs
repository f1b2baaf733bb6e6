//! Keeps [`Answers`] current from PostgreSQL's `rapport_changes`
//! notifications, and the barrier a request waits on before a kept answer
//! is served.

use super::Answers;
use rapport_store::CHANGE_CHANNEL;
use sea_orm::sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

/// How long a request waits for the barrier before computing its answer
/// afresh (the listener may be reconnecting).
const BARRIER_WAIT: Duration = Duration::from_secs(1);

/// "Every change committed before now has been applied": a marker
/// `sync:<process>:<n>` notified on the change channel comes back after
/// every notification committed before it was sent. One marker is in flight
/// at a time; every request that arrived before it was sent shares it.
pub struct Barrier {
    process: Uuid,
    /// Markers sent so far (the number of the last one).
    sent: AtomicU64,
    /// The last marker PostgreSQL accepted (sent and committed).
    accepted: AtomicU64,
    /// The last marker of ours that came back.
    back: watch::Sender<u64>,
    wanted: Notify,
}

impl Barrier {
    fn new() -> Self {
        Self {
            process: Uuid::new_v4(),
            sent: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            back: watch::channel(0).0,
            wanted: Notify::new(),
        }
    }

    /// Waits until every change committed before this call is applied.
    async fn wait(&self) -> Waited {
        // A marker numbered above those already sent leaves after now.
        let target = self.sent.load(Ordering::SeqCst) + 1;
        let mut back = self.back.subscribe();
        self.wanted.notify_one();
        match tokio::time::timeout(BARRIER_WAIT, back.wait_for(|n| *n >= target)).await {
            Ok(Ok(_)) => Waited::Confirmed,
            // Sent and committed, yet not back: the listener is not
            // hearing its channel.
            _ if self.accepted.load(Ordering::SeqCst) >= target => Waited::Deaf,
            // Not even sent in time (the database is slow or unreachable).
            _ => Waited::Unsent,
        }
    }

    fn marker(&self, n: u64) -> String {
        format!("sync:{}:{n}", self.process)
    }

    /// `payload` is one of this process's markers: note it came back.
    fn came_back(&self, payload: &str) -> bool {
        let Some(rest) = payload.strip_prefix("sync:") else {
            return false;
        };
        let Some((process, n)) = rest.split_once(':') else {
            return true;
        };
        if process == self.process.to_string()
            && let Ok(n) = n.parse::<u64>()
        {
            self.back.send_if_modified(|b| {
                let newer = n > *b;
                if newer {
                    *b = n;
                }
                newer
            });
        }
        true
    }
}

/// Sends `payload` on the change channel (committed at once).
async fn notify<'e, E>(on: E, payload: &str) -> Result<(), sea_orm::sqlx::Error>
where
    E: sea_orm::sqlx::Executor<'e, Database = sea_orm::sqlx::Postgres>,
{
    sea_orm::sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANGE_CHANNEL)
        .bind(payload)
        .execute(on)
        .await
        .map(|_| ())
}

const PROBE: &str = "probe:";

/// Sends a notification on the listener's own connection and waits for it
/// to arrive there (what arrives meanwhile is dropped: nothing is live yet).
async fn heard_itself(listener: &mut PgListener) -> bool {
    let probe = format!("{PROBE}{}", Uuid::new_v4());
    if notify(&mut *listener, &probe).await.is_err() {
        return false;
    }
    let heard = async {
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) if n.payload() == probe => return true,
                Ok(Some(_)) => {}
                _ => return false,
            }
        }
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), heard).await,
        Ok(true)
    )
}

enum Waited {
    Confirmed,
    Deaf,
    Unsent,
}

/// A pool of one connection of its own, with `pool`'s settings: the
/// listener and the markers never wait behind requests for a connection,
/// and a connection stuck on a dead socket holds none of the requests'.
fn own_pool(pool: &PgPool) -> PgPool {
    let options: PgConnectOptions = (*pool.connect_options()).clone();
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_lazy_with(options)
}

/// The cache and what keeps it current.
pub struct ResponseCache {
    pub answers: Answers,
    barrier: Barrier,
    started: AtomicBool,
    /// A marker did not come back in time: the listener may be stuck on a
    /// connection that died silently, so it starts over.
    restart: Notify,
}

impl ResponseCache {
    pub fn new(ttl: Duration, budget: usize) -> Self {
        Self {
            answers: Answers::new(ttl, budget),
            barrier: Barrier::new(),
            started: AtomicBool::new(false),
            restart: Notify::new(),
        }
    }

    /// Waits until every change committed before this call is applied.
    /// False if that could not be confirmed in time: then nothing is
    /// served or kept until the listener has connected again.
    pub async fn confirmed(&self) -> bool {
        match self.barrier.wait().await {
            Waited::Confirmed => true,
            Waited::Unsent => false,
            Waited::Deaf => {
                tracing::warn!(
                    "response cache: a barrier marker did not come back; reconnecting its listener"
                );
                self.answers.set_live(false);
                self.restart.notify_one();
                false
            }
        }
    }

    /// Starts listening (once per cache; later calls do nothing). Must run
    /// inside a Tokio runtime.
    pub fn start(self: &Arc<Self>, pool: PgPool) {
        if self.started.swap(true, Ordering::SeqCst) {
            return;
        }
        tokio::spawn(self.clone().listen(pool.clone()));
        tokio::spawn(self.clone().send_markers(own_pool(&pool)));
    }

    /// Sends one barrier marker whenever a request waits, one at a time.
    async fn send_markers(self: Arc<Self>, pool: PgPool) {
        let b = &self.barrier;
        // Connect now, not when the first request waits on a marker.
        if let Err(e) = pool.acquire().await {
            tracing::warn!(error = %e, "response cache: cannot connect for barrier markers yet");
        }
        loop {
            b.wanted.notified().await;
            let n = b.sent.fetch_add(1, Ordering::SeqCst) + 1;
            match notify(&pool, &b.marker(n)).await {
                Ok(_) => {
                    b.accepted.fetch_max(n, Ordering::SeqCst);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "response cache: sending a barrier marker failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    fn apply(&self, payload: &str) {
        if payload.starts_with(PROBE) || self.barrier.came_back(payload) {
            return;
        }
        match Uuid::parse_str(payload) {
            Ok(agency) => self.answers.changed(agency),
            // Unknown payloads: forget everything rather than guess.
            Err(_) => self.answers.forget_all(),
        }
    }

    async fn listen(self: Arc<Self>, pool: PgPool) {
        loop {
            // A pool of its own per attempt: dropping a listener whose
            // socket died silently may hang on its UNLISTEN for minutes.
            let mut listener = match PgListener::connect_with(&own_pool(&pool)).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "response cache: cannot connect its listener; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(e) = listener.listen(CHANGE_CHANNEL).await {
                tracing::warn!(error = %e, "response cache: LISTEN failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            // Live only once a notification of its own has come back: behind
            // a proxy that pools transactions (PgBouncer's transaction mode)
            // LISTEN succeeds but nothing arrives, and every request would
            // wait out the barrier.
            if !heard_itself(&mut listener).await {
                tracing::warn!(
                    "response cache: its own test notification did not come back (a transaction-pooling \
                     proxy between the API and PostgreSQL?); answering nothing from memory, trying again in 30 s"
                );
                tokio::time::sleep(Duration::from_secs(30)).await;
                continue;
            }
            self.answers.set_live(true);
            tracing::debug!("response cache: listening for changes");
            loop {
                let received = tokio::select! {
                    r = listener.try_recv() => r,
                    () = self.restart.notified() => break,
                };
                match received {
                    Ok(Some(n)) => self.apply(n.payload()),
                    Ok(None) => {
                        // Lost and reconnected (re-subscribed): what was
                        // committed in between is unknown.
                        tracing::warn!(
                            "response cache: listener reconnected; forgetting all answers"
                        );
                        self.answers.forget_all();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "response cache: listener failed; serving nothing kept until it is back");
                        self.answers.set_live(false);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        break;
                    }
                }
            }
        }
    }
}
