//! Answers to GraphQL queries, kept per session until the session's agency
//! changes (PostgreSQL only).
//!
//! Why: an inbox is read far more often than it changes (every agent's
//! screen refreshing the same page), and reading it costs the database and
//! the API ten times what answering from memory does.
//!
//! When an answer is served again: the same session sent the same body
//! (the same query, variables and operation name, byte for byte) and asked
//! for the same media type; the answer had no errors, was a query (never a
//! mutation), and is younger than `ttl` (fields derived from the clock,
//! such as an SLA's remaining minutes, are at most that old); and nothing
//! of the agency has changed since it was computed.
//!
//! Why it is never stale: every committed write to an agency's rows
//! notifies `rapport_changes` (migration 13's triggers, whatever wrote
//! it), and [`feed`] drops that agency's answers when the notification
//! arrives. Before serving a kept answer, a request waits for a marker of
//! this process's own, sent after the request arrived, to come back on the
//! same channel ([`feed::Barrier`]): PostgreSQL delivers notifications in
//! commit order, so by then every change committed before the request has
//! been applied. Answers computed while a change arrived are not kept
//! (each agency has a generation, checked when an answer is stored).
//! While the listener is not connected nothing is served or kept.

pub mod feed;

use actix_web::web::Bytes;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// What identifies an answer within an agency.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub session: Uuid,
    /// Whether the client asked for `application/graphql-response+json`.
    pub graphql_response: bool,
    pub body: Bytes,
}

/// A kept answer.
#[derive(Clone, Debug)]
pub struct Answer {
    pub content_type: &'static str,
    pub body: Bytes,
}

struct Kept {
    answer: Answer,
    at: Instant,
    size: usize,
}

#[derive(Default)]
struct AgencyAnswers {
    generation: u64,
    answers: HashMap<Key, Kept>,
}

#[derive(Default)]
struct Inner {
    live: bool,
    /// Bumped when everything is forgotten (listener lost or reconnected).
    epoch: u64,
    agencies: HashMap<Uuid, AgencyAnswers>,
    bytes: usize,
}

/// Taken before a request reads anything (before authentication, which
/// reads the member's role and scope); its answer is kept only if nothing
/// of the agency changed since.
#[derive(Clone, Copy, Debug)]
pub struct Ticket {
    agency: Uuid,
    epoch: u64,
    generation: u64,
    /// When the answer's reading began: its age counts from here.
    at: Instant,
}

impl Ticket {
    pub fn agency(&self) -> Uuid {
        self.agency
    }
}

/// The answers themselves; [`feed`] keeps them current.
pub struct Answers {
    ttl: Duration,
    budget: usize,
    inner: Mutex<Inner>,
}

/// Answers larger than this are not kept (an inbox page is about 40 kB).
const MAX_ANSWER: usize = 512 * 1024;

impl Answers {
    pub fn new(ttl: Duration, budget: usize) -> Self {
        Self {
            ttl,
            budget,
            inner: Mutex::default(),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain maps behind: usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the listener is connected (answers are kept and served).
    pub fn is_live(&self) -> bool {
        self.inner().live
    }

    /// A ticket for computing an answer for `agency`; None while the
    /// listener is not live.
    pub fn ticket(&self, agency: Uuid) -> Option<Ticket> {
        let mut inner = self.inner();
        if !inner.live {
            return None;
        }
        let epoch = inner.epoch;
        let generation = inner.agencies.entry(agency).or_default().generation;
        Some(Ticket {
            agency,
            epoch,
            generation,
            at: Instant::now(),
        })
    }

    /// Whether a young enough answer for `key` is kept (maybe stale:
    /// confirm with the barrier, then [`Self::lookup`]).
    pub fn holds(&self, agency: Uuid, key: &Key) -> bool {
        let inner = self.inner();
        inner.live
            && inner
                .agencies
                .get(&agency)
                .and_then(|a| a.answers.get(key))
                .is_some_and(|k| k.at.elapsed() < self.ttl)
    }

    /// The kept answer for `key`, to be called only once the barrier has
    /// passed: an answer kept by a request that started earlier may miss a
    /// change whose notification had not arrived yet.
    pub fn lookup(&self, agency: Uuid, key: &Key) -> Option<Answer> {
        let mut inner = self.inner();
        if !inner.live {
            return None;
        }
        let entry = inner.agencies.get_mut(&agency)?;
        let kept = entry.answers.get(key)?;
        if kept.at.elapsed() < self.ttl {
            return Some(kept.answer.clone());
        }
        let freed = kept.size;
        entry.answers.remove(key);
        inner.bytes -= freed;
        None
    }

    /// Keeps `answer` unless the agency changed since `ticket` was taken.
    pub fn keep(&self, ticket: Ticket, key: Key, answer: Answer) -> bool {
        let size = key.body.len() + answer.body.len() + 64;
        if size > MAX_ANSWER || size > self.budget {
            return false;
        }
        // Copies of exactly their length: the buffers they come from grew
        // by doubling and may hold up to twice what is counted.
        let key = Key {
            body: Bytes::copy_from_slice(&key.body),
            ..key
        };
        let answer = Answer {
            body: Bytes::copy_from_slice(&answer.body),
            ..answer
        };
        let mut inner = self.inner();
        if !inner.live || inner.epoch != ticket.epoch {
            return false;
        }
        if inner
            .agencies
            .get(&ticket.agency)
            .is_none_or(|a| a.generation != ticket.generation)
        {
            return false;
        }
        if inner.bytes + size > self.budget {
            // Simple and bounded: start over rather than track recency.
            for a in inner.agencies.values_mut() {
                a.answers = HashMap::new();
            }
            inner.bytes = 0;
        }
        inner.bytes += size;
        let entry = inner.agencies.entry(ticket.agency).or_default();
        let kept = Kept {
            answer,
            at: ticket.at,
            size,
        };
        if let Some(old) = entry.answers.insert(key, kept) {
            inner.bytes -= old.size;
        }
        true
    }

    /// Something of `agency` changed: forget its answers, and refuse those
    /// being computed.
    pub fn changed(&self, agency: Uuid) {
        let mut inner = self.inner();
        let entry = inner.agencies.entry(agency).or_default();
        entry.generation += 1;
        let freed: usize = std::mem::take(&mut entry.answers)
            .values()
            .map(|k| k.size)
            .sum();
        inner.bytes -= freed;
    }

    /// The listener connected (true) or was lost (false): either way what
    /// happened in between is unknown, so everything is forgotten.
    pub fn set_live(&self, live: bool) {
        self.inner().live = live;
        self.forget_all();
    }

    /// Forgets every answer (and refuses those being computed).
    pub fn forget_all(&self) {
        let mut inner = self.inner();
        inner.epoch += 1;
        inner.agencies.clear();
        inner.bytes = 0;
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.inner().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(session: Uuid, body: &str) -> Key {
        Key {
            session,
            graphql_response: false,
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    fn answer(s: &str) -> Answer {
        Answer {
            content_type: "application/json",
            body: Bytes::copy_from_slice(s.as_bytes()),
        }
    }

    fn ticket(a: &Answers, agency: Uuid, k: &Key) -> Ticket {
        assert!(a.lookup(agency, k).is_none(), "unexpected hit");
        a.ticket(agency).expect("live")
    }

    fn hit(a: &Answers, agency: Uuid, k: &Key) -> Option<String> {
        let holds = a.holds(agency, k);
        let found = a
            .lookup(agency, k)
            .map(|x| String::from_utf8(x.body.to_vec()).unwrap());
        assert_eq!(found.is_some(), holds, "holds agrees");
        found
    }

    fn live() -> Answers {
        let a = Answers::new(Duration::from_secs(60), 1 << 20);
        a.set_live(true);
        a
    }

    #[test]
    fn nothing_is_kept_or_served_until_the_listener_is_live() {
        let a = Answers::new(Duration::from_secs(60), 1 << 20);
        let (agency, k) = (Uuid::new_v4(), key(Uuid::new_v4(), "{a}"));
        assert!(a.lookup(agency, &k).is_none() && a.ticket(agency).is_none());
        a.set_live(true);
        let t = ticket(&a, agency, &k);
        assert!(a.keep(t, k.clone(), answer("1")));
        assert_eq!(hit(&a, agency, &k).as_deref(), Some("1"));
        a.set_live(false);
        assert!(a.lookup(agency, &k).is_none() && a.ticket(agency).is_none());
        assert!(!a.keep(t, k, answer("1")));
    }

    #[test]
    fn a_change_forgets_the_agencys_answers_only() {
        let a = live();
        let (one, two, s) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let k = key(s, "{a}");
        let t1 = ticket(&a, one, &k);
        let t2 = ticket(&a, two, &k);
        a.keep(t1, k.clone(), answer("one"));
        a.keep(t2, k.clone(), answer("two"));
        a.changed(one);
        assert_eq!(hit(&a, one, &k), None);
        assert_eq!(hit(&a, two, &k).as_deref(), Some("two"));
    }

    #[test]
    fn an_answer_computed_across_a_change_is_not_kept() {
        let a = live();
        let (agency, k) = (Uuid::new_v4(), key(Uuid::new_v4(), "{a}"));
        let t = ticket(&a, agency, &k);
        a.changed(agency);
        assert!(!a.keep(t, k.clone(), answer("old")));
        assert_eq!(hit(&a, agency, &k), None);
        // Nor across the listener reconnecting.
        let t = ticket(&a, agency, &k);
        a.set_live(false);
        a.set_live(true);
        assert!(!a.keep(t, k, answer("old")));
    }

    #[test]
    fn sessions_bodies_and_media_types_are_kept_apart() {
        let a = live();
        let agency = Uuid::new_v4();
        let k = key(Uuid::new_v4(), "{a}");
        let t = ticket(&a, agency, &k);
        a.keep(t, k.clone(), answer("x"));
        assert_eq!(hit(&a, agency, &key(Uuid::new_v4(), "{a}")), None);
        assert_eq!(hit(&a, agency, &key(k.session, "{b}")), None);
        let mut other_type = k.clone();
        other_type.graphql_response = true;
        assert_eq!(hit(&a, agency, &other_type), None);
        assert_eq!(hit(&a, Uuid::new_v4(), &k), None);
    }

    #[test]
    fn answers_expire_after_the_ttl() {
        let a = Answers::new(Duration::from_millis(20), 1 << 20);
        a.set_live(true);
        let (agency, k) = (Uuid::new_v4(), key(Uuid::new_v4(), "{a}"));
        let t = ticket(&a, agency, &k);
        a.keep(t, k.clone(), answer("x"));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(hit(&a, agency, &k), None);
        assert_eq!(a.bytes(), 0);
        // The age counts from the ticket (when reading began), not from
        // when the answer was kept.
        let t = ticket(&a, agency, &k);
        std::thread::sleep(Duration::from_millis(30));
        assert!(a.keep(t, k.clone(), answer("x")));
        assert_eq!(hit(&a, agency, &k), None);
    }

    #[test]
    fn the_budget_bounds_memory() {
        let a = Answers::new(Duration::from_secs(60), 1_000);
        a.set_live(true);
        let agency = Uuid::new_v4();
        let s = Uuid::new_v4();
        for i in 0..50 {
            let k = key(s, &format!("{{q{i}}}"));
            let t = ticket(&a, agency, &k);
            a.keep(t, k, answer(&"x".repeat(100)));
            assert!(a.bytes() <= 1_000, "{} bytes kept", a.bytes());
        }
        let big = key(s, "{big}");
        let t = ticket(&a, agency, &big);
        assert!(!a.keep(t, big, answer(&"x".repeat(2_000))));
    }
}
