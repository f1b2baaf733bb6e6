//! The channels this process has taken webhooks for, so that the next
//! delivery's signature is checked without asking the database first (one
//! round trip less on the request path). Nothing here is trusted for
//! storing: the raw event's insert reads the channel again
//! (`raw_events::persist_if_unchanged`), and a channel that changed since
//! (paused, disconnected, a new secret) is read afresh and answered as
//! usual. Only active channels with a secret are remembered, and only
//! their sealed secret: it is opened per delivery, as before.

use rapport_domain::ingest::ChannelKind;
use std::collections::HashMap;
use std::sync::Mutex;
use uuid::Uuid;

/// More channels than one agency fleet sends to; past it a new channel
/// takes the place of an arbitrary one (which is read again when its next
/// delivery comes) rather than the map growing with every URL called.
const CAPACITY: usize = 10_000;

#[derive(Clone)]
pub struct KnownChannel {
    pub kind: ChannelKind,
    pub sealed: Vec<u8>,
}

#[derive(Default)]
pub struct KnownChannels {
    map: Mutex<HashMap<Uuid, KnownChannel>>,
}

impl KnownChannels {
    pub fn get(&self, id: &Uuid) -> Option<KnownChannel> {
        self.lock().get(id).cloned()
    }

    pub fn remember(&self, id: Uuid, channel: KnownChannel) {
        let mut map = self.lock();
        if map.len() >= CAPACITY
            && !map.contains_key(&id)
            && let Some(evicted) = map.keys().next().copied()
        {
            map.remove(&evicted);
        }
        map.insert(id, channel);
    }

    pub fn forget(&self, id: &Uuid) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, KnownChannel>> {
        // A panic while holding the lock cannot leave the map half-written
        // in a way that matters: every entry is re-checked by the insert.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> KnownChannel {
        KnownChannel {
            kind: ChannelKind::Generic,
            sealed: vec![1, 2, 3],
        }
    }

    #[test]
    fn remembers_forgets_and_makes_room_when_full() {
        let channels = KnownChannels::default();
        let first = Uuid::now_v7();
        channels.remember(first, known());
        assert_eq!(channels.get(&first).unwrap().sealed, vec![1, 2, 3]);
        channels.forget(&first);
        assert!(channels.get(&first).is_none());

        channels.remember(first, known());
        for _ in 1..CAPACITY {
            channels.remember(Uuid::now_v7(), known());
        }
        assert_eq!(channels.lock().len(), CAPACITY);
        // Full: a known channel is updated in place, a new one takes the
        // place of another.
        channels.remember(first, known());
        assert_eq!(channels.lock().len(), CAPACITY);
        let last = Uuid::now_v7();
        channels.remember(last, known());
        assert_eq!(channels.lock().len(), CAPACITY);
        assert!(channels.get(&last).is_some());
    }
}
