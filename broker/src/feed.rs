//! The broker's one JetStream consumer: every message of the events stream (conversation and
//! user subjects), in stream order, resumed after every interruption from the stream sequence
//! after the last one this broker processed.
//!
//! It is an ephemeral push consumer without acknowledgements (flow control and idle heartbeats
//! on), managed here rather than by async-nats' ordered consumer because that one restarts
//! from the beginning of the stream when it is recreated before its first message, and because
//! the broker must know when it cannot resume: when the stream no longer holds what it missed
//! (older than the stream's max age, or the stream was recreated). The feed then says
//! [`FeedItem::Lost`] and carries on from what the stream has.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::AckPolicy, consumer::DeliverPolicy, consumer::push};
use async_nats::{Message, StatusCode};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// How often the server sends a heartbeat while no event flows; missing three (or a consumer
/// sequence that skips) makes the feed recreate its consumer.
const HEARTBEAT: Duration = Duration::from_secs(2);
const SILENCE: Duration = Duration::from_secs(6);
/// Between attempts to (re)create the consumer.
const RETRY: Duration = Duration::from_millis(500);

/// How long a join or a durable subscription waits for the feed to be in place.
const LIVE_DEADLINE: Duration = Duration::from_secs(5);

/// Waits (bounded) until the feed has its first consumer: from then on nothing published to
/// the stream is missed. False when it is not there in time (no stream yet?).
pub async fn wait_live(live: &watch::Receiver<bool>) -> bool {
    let mut live = live.clone();
    let in_place = tokio::time::timeout(LIVE_DEADLINE, live.wait_for(|live| *live)).await.is_ok();
    if !in_place {
        tracing::warn!("no event feed yet (is the events stream there?)");
    }
    in_place
}

#[derive(Debug)]
pub enum FeedItem {
    /// The next message of the stream.
    Event(Message),
    /// Events this broker did not receive are no longer in the stream (or it was recreated):
    /// only the API's event log can give them to clients.
    Lost,
}

#[derive(Debug)]
pub struct Feed {
    nats: async_nats::Client,
    jetstream: jetstream::Context,
    stream: String,
    /// The last stream sequence processed (or, before the first message, where the stream
    /// ended when the first consumer was made); `None` before that.
    last_stream_seq: Option<u64>,
    live: Option<Live>,
    /// A message that arrived after a gap, handed out after the [`FeedItem::Lost`].
    pending: Option<Message>,
    /// Set once the first consumer is in place: from then on no event is missed.
    live_once: watch::Sender<bool>,
    metrics: std::sync::Arc<Metrics>,
}

#[derive(Debug)]
struct Live {
    messages: async_nats::Subscriber,
    /// The consumer sequence of the last message from this consumer.
    consumer_seq: u64,
    deadline: Instant,
}

impl Feed {
    pub fn new(
        nats: async_nats::Client,
        stream: String,
        metrics: std::sync::Arc<Metrics>,
        live_once: watch::Sender<bool>,
    ) -> Self {
        let jetstream = jetstream::new(nats.clone());
        Self { nats, jetstream, stream, last_stream_seq: None, live: None, pending: None, live_once, metrics }
    }

    /// Drops the consumer, so the next read makes a new one from where this broker left off
    /// (after a NATS reconnect the server may have lost the old one).
    pub fn resume(&mut self) {
        self.live = None;
    }

    /// The next item; waits (retrying) while the stream is unavailable. Cancel-safe: nothing is
    /// taken from the consumer until it is returned.
    pub async fn next(&mut self) -> FeedItem {
        if let Some(message) = self.pending.take() {
            return FeedItem::Event(message);
        }
        loop {
            let Some(live) = &mut self.live else {
                match self.create().await {
                    Ok(lost) if lost => return FeedItem::Lost,
                    Ok(_) => {}
                    Err(error) => {
                        tracing::debug!(%error, stream = %self.stream, "events consumer not created; retrying");
                        tokio::time::sleep(RETRY).await;
                    }
                }
                continue;
            };
            let message = match tokio::time::timeout_at(live.deadline, live.messages.next()).await {
                Ok(Some(message)) => message,
                Ok(None) | Err(_) => {
                    tracing::info!("events consumer silent; making a new one from where this broker left off");
                    self.live = None;
                    continue;
                }
            };
            live.deadline = Instant::now() + SILENCE;
            if message.status == Some(StatusCode::IDLE_HEARTBEAT) {
                if let Some(reply) = message.reply {
                    // Flow control: the server sends more once this is answered. Not awaited
                    // here, so dropping `next` can never lose the answer.
                    let nats = self.nats.clone();
                    tokio::spawn(async move { nats.publish(reply, bytes::Bytes::new()).await });
                } else if last_consumer_seq(&message).is_some_and(|seq| seq != live.consumer_seq) {
                    tracing::info!("events consumer skipped messages; making a new one");
                    self.live = None;
                }
                continue;
            }
            let Some(sequences) = message.reply.as_deref().and_then(AckSequences::parse) else { continue };
            if sequences.consumer != live.consumer_seq + 1 {
                tracing::info!("events consumer out of sequence; making a new one");
                self.live = None;
                continue;
            }
            live.consumer_seq = sequences.consumer;
            self.metrics.feed_pending.set(i64::try_from(sequences.pending).unwrap_or(i64::MAX));
            let expected = self.last_stream_seq.map_or(sequences.stream, |last| last + 1);
            self.last_stream_seq = Some(sequences.stream);
            if sequences.stream > expected {
                tracing::warn!(
                    from = expected,
                    to = sequences.stream - 1,
                    "events missed here are gone from the stream"
                );
                self.pending = Some(message);
                return FeedItem::Lost;
            }
            if sequences.stream < expected {
                continue;
            }
            return FeedItem::Event(message);
        }
    }

    /// Makes a consumer starting after the last processed message; returns whether the stream
    /// no longer holds what was missed.
    async fn create(&mut self) -> anyhow::Result<bool> {
        let mut stream = self.jetstream.get_stream(&self.stream).await?;
        let state = stream.info().await?.state.clone();
        let (first, last) = (state.first_sequence, state.last_sequence);
        let (start, lost) = match self.last_stream_seq {
            // The first consumer: from now on.
            None => (last + 1, false),
            // The stream was recreated: it restarted its sequence.
            Some(processed) if processed > last => (last + 1, true),
            // Older than what the stream keeps.
            Some(processed) if state.messages > 0 && processed + 1 < first => (first, true),
            Some(processed) => (processed + 1, false),
        };
        let inbox = self.nats.new_inbox();
        let messages = self.nats.subscribe(inbox.clone()).await?;
        let config = push::Config {
            deliver_subject: inbox,
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: start },
            ack_policy: AckPolicy::None,
            flow_control: true,
            idle_heartbeat: HEARTBEAT,
            memory_storage: true,
            num_replicas: 1,
            // The server removes it once this broker is gone.
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        };
        self.jetstream.create_consumer_on_stream(config, &self.stream).await?;
        if self.last_stream_seq.is_some() {
            self.metrics.feed_resumes.inc();
            tracing::info!(from_stream_seq = start, lost, "events consumer resumed");
        }
        self.live_once.send_replace(true);
        self.last_stream_seq = Some(start - 1);
        self.live = Some(Live { messages, consumer_seq: 0, deadline: Instant::now() + SILENCE });
        Ok(lost)
    }
}

/// `Nats-Last-Consumer` of an idle heartbeat: the last consumer sequence the server sent.
fn last_consumer_seq(message: &Message) -> Option<u64> {
    message.headers.as_ref()?.get("Nats-Last-Consumer")?.as_str().parse().ok()
}

/// The sequences in a JetStream delivery's reply subject: `$JS.ACK.<stream>.<consumer>.
/// <delivered>.<stream seq>.<consumer seq>.<time>.<pending>`, or with a domain and an account
/// hash before the stream (and a random token after) on newer servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AckSequences {
    stream: u64,
    consumer: u64,
    /// Messages of the stream not yet delivered to this consumer: how far behind it is.
    pending: u64,
}

impl AckSequences {
    fn parse(reply: &str) -> Option<Self> {
        let tokens: Vec<&str> = reply.strip_prefix("$JS.ACK.")?.split('.').collect();
        let at = match tokens.len() {
            7 => 3,
            len if len >= 9 => 5,
            _ => return None,
        };
        Some(Self {
            stream: tokens[at].parse().ok()?,
            consumer: tokens[at + 1].parse().ok()?,
            pending: tokens[at + 3].parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_are_read_from_both_reply_subject_layouts() {
        let v1 = "$JS.ACK.PARLEY_EVENTS.abc.1.42.7.1700000000000000000.0";
        assert_eq!(AckSequences::parse(v1), Some(AckSequences { stream: 42, consumer: 7, pending: 0 }));
        let v2 = "$JS.ACK._.ACCHASH.PARLEY_EVENTS.abc.1.42.7.1700000000000000000.3.token";
        assert_eq!(AckSequences::parse(v2), Some(AckSequences { stream: 42, consumer: 7, pending: 3 }));
        assert_eq!(AckSequences::parse("_INBOX.x"), None);
        assert_eq!(AckSequences::parse("$JS.ACK.a.b.c"), None);
    }
}
