//! The broker's channel subscriptions: channel key (`<namespace>.<base64url(name)>`, as it is
//! in the subject) → the connections subscribed here and, for durable channels, the position
//! (epoch, latest offset) this broker has delivered up to.
//!
//! One NATS message per publication reaches the broker (through the events feed for durable
//! channels, the one ephemeral wildcard subscription otherwise); this table fans it out. A
//! subscription costs a 24-byte slot in its channel's list (and the channel entry, once per
//! channel with a local subscriber): no NATS subscription, no task.
//!
//! Every subscriber of a durable channel carries the last offset it was given, so a
//! publication it already has (recovered from the API, or replayed from the router's journal)
//! is never sent to it twice, and one newer is never withheld from the others.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};

use foldhash::fast::{FixedState, RandomState};

use crate::outbound::{Frame, Outbound, Pushed};

const SHARDS: usize = 64;

#[derive(Debug)]
struct Subscriber {
    outbound: Arc<Outbound>,
    /// Durable channels: the last offset this subscriber has (sent or recovered).
    last: i64,
}

/// Where a durable channel stands as this broker knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    pub epoch: Box<str>,
    pub offset: i64,
}

#[derive(Debug, Default)]
struct ChannelEntry {
    subscribers: Vec<Subscriber>,
    /// Durable channels, once a subscriber's position came from the API.
    position: Option<Position>,
}

/// What a delivery did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    pub sent: usize,
    pub overflowed: usize,
}

type Shard = HashMap<Box<str>, ChannelEntry, RandomState>;

#[derive(Debug)]
pub struct ChannelIndex {
    shards: Box<[Mutex<Shard>]>,
    hasher: FixedState,
}

impl Default for ChannelIndex {
    fn default() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::default())).collect(), hasher: FixedState::default() }
    }
}

impl ChannelIndex {
    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        let shard = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        self.shards[shard].lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Hands the frame (made only when someone subscribes) to every subscriber of `key` that
    /// does not have `offset` yet (all of them for an ephemeral publication, `offset: None`).
    /// `None` when nobody here subscribes (or no frame could be made).
    pub fn deliver(&self, key: &str, offset: Option<i64>, frame: impl FnOnce() -> Option<Frame>) -> Option<Delivered> {
        let mut shard = self.shard(key);
        let entry = shard.get_mut(key)?;
        let frame = frame()?;
        let frame = &frame;
        let mut delivered = Delivered::default();
        match offset {
            Some(offset) => {
                if let Some(position) = &mut entry.position {
                    position.offset = position.offset.max(offset);
                }
                for subscriber in entry.subscribers.iter_mut().filter(|subscriber| subscriber.last < offset) {
                    subscriber.last = offset;
                    delivered.sent += 1;
                    delivered.overflowed += usize::from(subscriber.outbound.push(frame.clone()) == Pushed::Overflowed);
                }
            }
            None => {
                for subscriber in &entry.subscribers {
                    delivered.sent += 1;
                    delivered.overflowed += usize::from(subscriber.outbound.push(frame.clone()) == Pushed::Overflowed);
                }
            }
        }
        Some(delivered)
    }

    /// The position of a durable channel with a local subscriber, if known.
    pub fn position(&self, key: &str) -> Option<Position> {
        self.shard(key).get(key)?.position.clone()
    }

    /// Subscribes `outbound` to a durable channel whose position this broker knows, when
    /// `since` is absent or is that position (nothing to recover): queues the frame `subscribed`
    /// makes of the position, then adds the subscriber, under the channel's lock. False (and
    /// nothing done) otherwise: the API must be asked.
    pub fn subscribe_at_known(
        &self,
        key: &str,
        outbound: &Arc<Outbound>,
        since: Option<(&str, i64)>,
        subscribed: impl FnOnce(&Position) -> Frame,
    ) -> bool {
        let mut shard = self.shard(key);
        let Some(entry) = shard.get_mut(key) else { return false };
        let Some(position) = &entry.position else { return false };
        if since.is_some_and(|(epoch, offset)| *position.epoch != *epoch || position.offset != offset) {
            return false;
        }
        outbound.push(subscribed(position));
        let last = position.offset;
        entry.subscribers.push(Subscriber { outbound: Arc::clone(outbound), last });
        true
    }

    /// Queues `frames` to `outbound` and adds it as a subscriber that has everything up to
    /// `last` (durable), all under the channel's lock, so no publication can come between.
    /// `position` (durable) becomes the channel's if it is newer than what is known.
    pub fn subscribe(
        &self,
        key: &str,
        outbound: Arc<Outbound>,
        frames: impl IntoIterator<Item = Frame>,
        last: i64,
        position: Option<Position>,
    ) {
        let mut shard = self.shard(key);
        let entry = shard.entry(key.into()).or_default();
        for frame in frames {
            outbound.push(frame);
        }
        if let Some(position) = position {
            match &mut entry.position {
                Some(known) if known.epoch == position.epoch => known.offset = known.offset.max(position.offset),
                known => *known = Some(position),
            }
        }
        entry.subscribers.push(Subscriber { outbound, last });
    }

    /// Removes `outbound` from `key`'s subscribers; the entry goes with its last subscriber.
    pub fn unsubscribe(&self, key: &str, outbound: &Arc<Outbound>) {
        let mut shard = self.shard(key);
        let Some(entry) = shard.get_mut(key) else { return };
        if let Some(at) = entry.subscribers.iter().position(|subscriber| Arc::ptr_eq(&subscriber.outbound, outbound)) {
            entry.subscribers.swap_remove(at);
        }
        if entry.subscribers.is_empty() {
            shard.remove(key);
        }
    }

    /// Connections subscribed to `key` here.
    pub fn subscribers(&self, key: &str) -> usize {
        self.shard(key).get(key).map_or(0, |entry| entry.subscribers.len())
    }

    /// (channels, subscriptions) for the gauges.
    pub fn sizes(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(channels, subscriptions), shard| {
            let shard = shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            (channels + shard.len(), subscriptions + shard.values().map(|entry| entry.subscribers.len()).sum::<usize>())
        })
    }

    pub fn clear(&self) {
        for shard in self.shards.iter() {
            shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::QueueBound;

    fn outbound() -> Arc<Outbound> {
        Arc::new(Outbound::new(QueueBound { frames: 100, bytes: 1 << 20 }))
    }

    fn frame(text: &str) -> Frame {
        Frame { text: text.to_owned().into(), occurred_at_micros: 0 }
    }

    fn queued(outbound: &Outbound) -> usize {
        outbound.queued_frames()
    }

    #[test]
    fn a_durable_publication_reaches_each_subscriber_once_and_only_after_what_it_has() {
        let index = ChannelIndex::default();
        let (early, late) = (outbound(), outbound());
        let position = |offset| Some(Position { epoch: "e".into(), offset });
        index.subscribe("public.eA", Arc::clone(&early), [], 4, position(4));
        // `late` recovered up to 6 (the API saw 5 and 6 committed before the feed brought them).
        index.subscribe("public.eA", Arc::clone(&late), [frame("subscribed")], 6, position(6));
        assert_eq!(queued(&late), 1);
        for offset in 5..=7 {
            index.deliver("public.eA", Some(offset), || Some(frame("p")));
        }
        assert_eq!((queued(&early), queued(&late)), (3, 2), "5, 6, 7 to early; only 7 to late");
        assert_eq!(
            index.deliver("public.eA", Some(7), || Some(frame("p"))),
            Some(Delivered::default()),
            "a repeat goes nowhere"
        );
        let known = outbound();
        let subscribed = |position: &Position| frame(&position.offset.to_string());
        assert!(!index.subscribe_at_known("public.eA", &known, Some(("e", 6)), subscribed), "behind: ask the API");
        assert!(index.subscribe_at_known("public.eA", &known, Some(("e", 7)), subscribed));
        index.deliver("public.eA", Some(8), || Some(frame("p")));
        assert_eq!(queued(&known), 2, "subscribed at 7, then 8");
        assert_eq!(index.deliver("public.other", Some(1), || Some(frame("p"))), None);
    }

    #[test]
    fn the_last_subscriber_takes_the_entry_with_it() {
        let index = ChannelIndex::default();
        let (a, b) = (outbound(), outbound());
        index.subscribe("live.eA", Arc::clone(&a), [], 0, None);
        index.subscribe("live.eA", Arc::clone(&b), [], 0, None);
        assert_eq!(index.deliver("live.eA", None, || Some(frame("p"))).map(|d| d.sent), Some(2));
        index.unsubscribe("live.eA", &a);
        assert_eq!(index.subscribers("live.eA"), 1);
        index.unsubscribe("live.eA", &b);
        assert_eq!(index.sizes(), (0, 0));
        assert_eq!(index.deliver("live.eA", None, || Some(frame("p"))), None);
    }
}
