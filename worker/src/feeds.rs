//! Feed polling: each ACTIVE FEED channel is fetched every
//! `pollIntervalSeconds` with a conditional GET (ETag / Last-Modified).
//! A changed body is persisted as a raw event and enqueued like a webhook
//! delivery; entries are deduplicated by id when ingested. Errors back off
//! exponentially (up to an hour) and are kept in the channel's state.

use crate::egress;
use anyhow::Context;
use chrono::{DateTime, Utc};
use rapport_domain::crypto::sha256_hex;
use rapport_store::Kv;
use rapport_store::entities::channel;
use rapport_store::jobs::{self, INGEST};
use rapport_store::raw_events::{self, NewRawEvent};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct FeedConfig {
    /// How often to look for feeds that are due.
    pub tick: Duration,
    pub timeout: Duration,
    pub max_bytes: usize,
    pub max_backoff: Duration,
    /// Feeds fetched at once: a feed that never answers holds one slot for
    /// `timeout`, not the whole pass.
    pub concurrency: usize,
    /// Whether feed URLs may reach private addresses
    /// (`RAPPORT_ALLOW_PRIVATE_URLS`; see crate::egress).
    pub allow_private: bool,
}

impl Default for FeedConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(5),
            timeout: Duration::from_secs(20),
            max_bytes: 5 * 1024 * 1024,
            max_backoff: Duration::from_secs(3600),
            concurrency: 16,
            allow_private: false,
        }
    }
}

pub struct FeedPoller {
    db: DatabaseConnection,
    kv: Kv,
    http: reqwest::Client,
    cfg: FeedConfig,
}

/// What one fetch did.
#[derive(Debug, PartialEq, Eq)]
pub enum Fetched {
    /// A new body, stored and enqueued.
    New,
    /// The same body as before (stored once already).
    Unchanged,
    /// 304 Not Modified.
    NotModified,
}

fn state_str(state: &Value, key: &str) -> Option<String> {
    state.get(key).and_then(Value::as_str).map(String::from)
}

impl FeedPoller {
    pub fn new(db: DatabaseConnection, kv: Kv, cfg: FeedConfig) -> anyhow::Result<Self> {
        let http = egress::guarded(
            reqwest::Client::builder()
                .timeout(cfg.timeout)
                .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
                .user_agent(concat!(
                    "Rapport/",
                    env!("CARGO_PKG_VERSION"),
                    " feed poller"
                )),
            cfg.allow_private,
        )
        .build()
        .context("building the feed HTTP client")?;
        Ok(Self { db, kv, http, cfg })
    }

    /// Polls every feed that is due, `concurrency` at a time and taking
    /// the agencies in turn; returns how many were fetched.
    pub async fn poll_due(&self) -> anyhow::Result<usize> {
        use futures_util::StreamExt;
        let now = Utc::now();
        let feeds = channel::Entity::find()
            .filter(channel::Column::Kind.eq("FEED"))
            .filter(channel::Column::Status.eq("ACTIVE"))
            .order_by_asc(channel::Column::Id)
            .all(&self.db)
            .await?;
        let due_now =
            crate::fair::in_turn(feeds.into_iter().filter(|c| due(c, now)).collect(), |c| {
                c.agency_id
            });
        let outcomes: Vec<anyhow::Result<bool>> = futures_util::stream::iter(due_now)
            .map(|c| self.poll_if_still_due(c))
            .buffer_unordered(self.cfg.concurrency.max(1))
            .collect()
            .await;
        let mut polled = 0;
        for outcome in outcomes {
            polled += usize::from(outcome?);
        }
        Ok(polled)
    }

    /// Polls `c` if this worker claims it and it is still due.
    async fn poll_if_still_due(&self, c: channel::Model) -> anyhow::Result<bool> {
        if !self.claim(c.id).await? {
            return Ok(false);
        }
        // Read again once claimed: the list is as old as this pass, and
        // another worker may have polled it meanwhile (its lock run out
        // behind slow feeds) or an agent changed it.
        let Some(fresh) = channel::Entity::find_by_id(c.id).one(&self.db).await? else {
            return Ok(false);
        };
        if fresh.status != "ACTIVE" || !due(&fresh, Utc::now()) {
            return Ok(false);
        }
        // The outcome (including a failed fetch) is in the channel's state.
        let _outcome = self.poll(fresh).await?;
        Ok(true)
    }

    /// Several workers may poll: a short lock gives each feed to one (and
    /// `poll_due` reads the feed again once it holds it).
    async fn claim(&self, id: uuid::Uuid) -> anyhow::Result<bool> {
        let got: Option<String> = redis::cmd("SET")
            .arg(self.kv.key(&format!("feed:lock:{id}")))
            .arg("1")
            .arg("NX")
            .arg("PX")
            .arg((self.cfg.timeout.as_millis() * 2) as u64)
            .query_async(&mut self.kv.conn())
            .await?;
        Ok(got.is_some())
    }

    /// Fetches one feed now and records the outcome in its state.
    pub async fn poll(&self, c: channel::Model) -> anyhow::Result<Result<Fetched, String>> {
        let outcome = self.fetch(&c).await;
        let interval = i64::from(c.poll_interval_seconds.unwrap_or(300));
        let mut state = c.state.as_object().cloned().unwrap_or_default();
        let now = Utc::now();
        state.insert("lastPolledAt".into(), json!(now.to_rfc3339()));
        let delay = match &outcome {
            Ok((_, etag, modified)) => {
                state.insert("failures".into(), json!(0));
                state.remove("lastError");
                if let Some(e) = etag {
                    state.insert("etag".into(), json!(e));
                }
                if let Some(m) = modified {
                    state.insert("lastModified".into(), json!(m));
                }
                interval
            }
            Err(e) => {
                let failures = state.get("failures").and_then(Value::as_u64).unwrap_or(0) + 1;
                state.insert("failures".into(), json!(failures));
                state.insert("lastError".into(), json!(e));
                tracing::warn!(channel = %c.id, failures, error = %e, "feed poll failed");
                metrics::counter!("rapport_feed_poll_failures_total").increment(1);
                // Never sooner than the interval: a daily feed that fails
                // is not fetched hourly.
                let backoff = interval.saturating_mul(1 << failures.min(10));
                backoff
                    .min(self.cfg.max_backoff.as_secs() as i64)
                    .max(interval)
            }
        };
        state.insert(
            "nextPollAt".into(),
            json!((now + chrono::Duration::seconds(delay)).to_rfc3339()),
        );
        // Only if the feed is still the one fetched, on the same interval:
        // a new address (its state emptied by `updateChannel`) must not get
        // this one's validators and schedule, nor a new interval (its next
        // poll cleared) the old one's schedule.
        channel::Entity::update_many()
            .col_expr(channel::Column::State, Expr::value(Value::Object(state)))
            .filter(channel::Column::Id.eq(c.id))
            .filter(match &c.feed_url {
                Some(u) => channel::Column::FeedUrl.eq(u.as_str()),
                None => channel::Column::FeedUrl.is_null(),
            })
            .filter(match c.poll_interval_seconds {
                Some(i) => channel::Column::PollIntervalSeconds.eq(i),
                None => channel::Column::PollIntervalSeconds.is_null(),
            })
            .exec(&self.db)
            .await?;
        Ok(outcome.map(|(f, _, _)| f))
    }

    async fn fetch(
        &self,
        c: &channel::Model,
    ) -> Result<(Fetched, Option<String>, Option<String>), String> {
        let url = c.feed_url.as_deref().ok_or("FEED channel without a URL")?;
        let parsed =
            egress::target(url, self.cfg.allow_private).map_err(|e| format!("fetching {e}"))?;
        let mut req = self.http.get(parsed);
        if let Some(etag) = state_str(&c.state, "etag") {
            req = req.header("If-None-Match", etag);
        }
        if let Some(modified) = state_str(&c.state, "lastModified") {
            req = req.header("If-Modified-Since", modified);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("fetching {url}: {}", egress::describe(&e)))?;
        let status = resp.status();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let (etag, modified) = (header("etag"), header("last-modified"));
        if status == reqwest::StatusCode::NOT_MODIFIED {
            return Ok((Fetched::NotModified, etag, modified));
        }
        if !status.is_success() {
            return Err(format!("{url} answered {status}"));
        }
        let (body, cut) = egress::body_at_most(resp, self.cfg.max_bytes)
            .await
            .map_err(|e| format!("reading {url}: {e}"))?;
        if cut {
            return Err(format!("{url} is larger than {} bytes", self.cfg.max_bytes));
        }
        // Read here, not only by the ingest job: a page that is no feed (a
        // login wall, an error page served with 200) is this poll's error,
        // backed off, its validators not kept, rather than a healthy feed
        // with a dead letter at every change.
        // (Undated entries read as dated at the epoch here, so the key
        // does not change with the time of the poll; the ingest job dates
        // them by the receipt.)
        // (A parser panic is this feed's error, not the end of the poller.)
        let entries = std::panic::catch_unwind(|| {
            rapport_domain::ingest::feed::parse(&body, DateTime::UNIX_EPOCH)
        })
        .map_err(|_| format!("{url}: the feed could not be read (its parser failed)"))?
        .map_err(|e| format!("{url}: {e}"))?;
        let (id, fresh) = raw_events::persist(
            &self.db,
            NewRawEvent {
                agency_id: c.agency_id,
                channel_id: c.id,
                workspace_id: c.workspace_id,
                dedup_key: entries_key(&entries),
                headers: json!({ "url": url, "etag": etag, "last-modified": modified }),
                body,
            },
        )
        .await
        .map_err(|e| format!("storing the feed: {e}"))?;
        if fresh {
            // Durable already; the reconciler enqueues it if this fails.
            if let Err(e) = jobs::enqueue(&self.kv, INGEST, &json!({ "raw_event_id": id })).await {
                tracing::warn!(error = %e, "enqueueing a fetched feed failed");
            }
        }
        Ok((
            if fresh {
                Fetched::New
            } else {
                Fetched::Unchanged
            },
            etag,
            modified,
        ))
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.poll_due().await {
                tracing::warn!(error = %e, "feed polling pass failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.tick) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Whether `c`'s next poll is due at `now` (never polled: due).
fn due(c: &channel::Model, now: DateTime<Utc>) -> bool {
    state_str(&c.state, "nextPollAt")
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .is_none_or(|t| t <= now)
}

/// What a feed document says, as a key: its entries' ids, dates and text.
/// A feed that stamps every answer with the time (`<lastBuildDate>`,
/// `<updated>`) and a new ETag is stored again only when an entry changes,
/// not at every poll.
fn entries_key(entries: &[rapport_domain::ingest::Inbound]) -> String {
    let mut words = Vec::new();
    for e in entries {
        for part in [
            e.external_id.as_bytes(),
            e.text.as_bytes(),
            e.published_at.to_rfc3339().as_bytes(),
        ] {
            words.extend_from_slice(&(part.len() as u64).to_le_bytes());
            words.extend_from_slice(part);
        }
    }
    format!("entries:{}", sha256_hex(&words))
}
