//! Live feeds share one Redis pub/sub connection per process. A
//! connection per GraphQL subscription would let one tenant's sockets use
//! up the server's clients (Redis refuses beyond `maxclients`) and with
//! them every tenant's live updates and workers.
//!
//! A reader task hands each message to its channel's broadcast; a channel
//! is subscribed on Redis when a feed of it starts, and unsubscribed
//! (once no feed reads it) the next time a feed starts, under the same lock
//! as subscribing, so a SUBSCRIBE and an UNSUBSCRIBE never cross. When the
//! connection is lost every feed on it ends, as a feed of its own
//! connection did: the subscriber is told and subscribes again, on a new
//! connection.

use futures_util::{Stream, StreamExt};
use redis::RedisResult;
use redis::aio::PubSubSink;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Messages held per channel for a feed that reads slowly; beyond, it
/// misses the oldest (live updates are hints, the database holds the
/// truth).
const BUFFER: usize = 256;

/// The longest a connect, SUBSCRIBE or UNSUBSCRIBE may take: they run
/// under the lock every new feed of the process waits on, and a
/// connection dropped without a reset would otherwise hold it for as
/// long as TCP takes to give up.
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

type Channels = Arc<Mutex<HashMap<String, broadcast::Sender<String>>>>;

struct Link {
    sink: PubSubSink,
    channels: Channels,
    alive: Arc<AtomicBool>,
    /// The reader: stopped with the link (a link given up while its
    /// connection still stands would otherwise keep it, subscribed).
    reader: tokio::task::AbortHandle,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A Redis command on the shared connection, bounded by [`COMMAND_TIMEOUT`].
async fn bounded<T>(f: impl std::future::Future<Output = RedisResult<T>>) -> RedisResult<T> {
    tokio::time::timeout(COMMAND_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| {
            Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "Redis did not answer in time",
            )))
        })
}

pub struct LiveHub {
    client: redis::Client,
    link: tokio::sync::Mutex<Option<Link>>,
}

impl LiveHub {
    pub fn new(client: redis::Client) -> Self {
        Self {
            client,
            link: tokio::sync::Mutex::new(None),
        }
    }

    /// Messages published on `channel` from now on; the stream ends when
    /// the connection is lost.
    pub async fn subscribe(
        &self,
        channel: &str,
    ) -> RedisResult<impl Stream<Item = String> + Send + use<>> {
        match self.try_subscribe(channel).await {
            // The connection was lost before its reader noticed (the
            // failed subscribe marked it): once more, on a new one.
            Err(e) if self.link.lock().await.is_some() => {
                tracing::debug!(error = %e, "subscribing on the shared connection failed; reconnecting");
                self.try_subscribe(channel).await
            }
            other => other,
        }
    }

    async fn try_subscribe(
        &self,
        channel: &str,
    ) -> RedisResult<impl Stream<Item = String> + Send + use<>> {
        let mut link = self.link.lock().await;
        if link
            .as_ref()
            .is_none_or(|l| !l.alive.load(Ordering::SeqCst))
        {
            *link = Some(self.connect().await?);
        }
        let Some(l) = link.as_mut() else {
            unreachable!("connected above")
        };
        let idle: Vec<String> = lock(&l.channels)
            .iter()
            .filter(|(_, tx)| tx.receiver_count() == 0)
            .map(|(name, _)| name.clone())
            .collect();
        for name in idle {
            lock(&l.channels).remove(&name);
            if let Err(e) = bounded(l.sink.unsubscribe(&name)).await {
                tracing::warn!(error = %e, "unsubscribing an idle live channel failed");
                if e.is_timeout() || e.is_io_error() || e.is_connection_dropped() {
                    l.alive.store(false, Ordering::SeqCst);
                    return Err(e);
                }
            }
        }
        // SUBSCRIBE goes to Redis even for a channel already read (Redis
        // takes it again as a no-op): the round trip is what finds a
        // connection lost before its reader noticed, so a feed started just
        // after a loss gets the new connection instead of ending at once.
        if let Err(e) = bounded(l.sink.subscribe(channel)).await {
            // A connection that does not answer is not kept; a refusal (an
            // ACL) is this channel's alone.
            if e.is_timeout() || e.is_io_error() || e.is_connection_dropped() {
                l.alive.store(false, Ordering::SeqCst);
            }
            return Err(e);
        }
        let mut channels = lock(&l.channels);
        // Checked with the reader's cleanup excluded: a sender put in after
        // it emptied the map would never be read or end.
        if !l.alive.load(Ordering::SeqCst) {
            return Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "the live connection was lost",
            )));
        }
        let rx = match channels.get(channel) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(BUFFER);
                channels.insert(channel.to_string(), tx);
                rx
            }
        };
        drop(channels);
        Ok(futures_util::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(m) => return Some((m, rx)),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "a live feed fell behind");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }))
    }

    async fn connect(&self) -> RedisResult<Link> {
        let (sink, mut stream) = bounded(self.client.get_async_pubsub()).await?.split();
        let channels: Channels = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        let (to, up) = (channels.clone(), alive.clone());
        let reader = tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                let Ok(payload) = msg.get_payload::<String>() else {
                    continue;
                };
                if let Some(tx) = lock(&to).get(msg.get_channel_name()) {
                    // No feed reads it now: dropped, as Redis would.
                    let _ = tx.send(payload);
                }
            }
            // Every feed ends: the senders go (under the map's lock, so no
            // subscriber adds one after).
            let mut channels = lock(&to);
            up.store(false, Ordering::SeqCst);
            channels.clear();
        })
        .abort_handle();
        Ok(Link {
            sink,
            channels,
            alive,
            reader,
        })
    }
}

fn lock(c: &Channels) -> std::sync::MutexGuard<'_, HashMap<String, broadcast::Sender<String>>> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}
