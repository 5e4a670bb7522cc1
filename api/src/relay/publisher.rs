//! Publishing to JetStream for the relay: one message, or one conversation's (one channel's)
//! messages in order with their acknowledgements pipelined.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::{self, message::PublishMessage};
use futures_util::future::BoxFuture;
use opentelemetry::global::BoxedSpan;
use parley_shared::subjects::Subjects;

/// Most messages of one chain sent ahead of their predecessors' acknowledgements. One NATS
/// connection carries them in the order sent and JetStream stores them in that order, so a
/// conversation keeps its seq order in the stream while a hot one is no longer limited to one
/// publish per round trip. (Should a connection drop between two sends, the later can be
/// stored and the earlier lost: the round stops at the earlier and the next republishes it, so
/// a broker may see a seq after its successor, as it may after any republish; clients order by
/// seq and fill gaps over REST.)
pub(super) const CHAIN_IN_FLIGHT: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// No acknowledgement (or no permit to publish) within the publish timeout.
    #[error("no acknowledgement within {0:?}")]
    Stalled(Duration),
    /// Larger than the server's `max_payload`: no retry can publish it.
    #[error("larger than the NATS server's max_payload")]
    TooLarge,
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// A stored channel name that no longer parses: no subject can carry it.
    #[error("the stored channel name is not valid")]
    Unroutable,
    #[error("cannot decode or encode the stored event: {0}")]
    Encode(#[from] serde_json::Error),
}

/// How one item of a chain is published.
pub(super) enum Step<'a> {
    /// Sent behind the items before it without waiting for their acknowledgements; `span`
    /// ends with the acknowledgement.
    Pipelined { subject: String, message: PublishMessage, span: BoxedSpan },
    /// Published after every item before it was acknowledged and completely before the next
    /// (an event that also goes to its users' subjects, which order membership with it).
    Alone(BoxFuture<'a, Result<(), Failure>>),
}

pub(super) struct Publisher<'a> {
    jetstream: &'a jetstream::Context,
    pub(super) subjects: &'a Subjects,
    /// Bounds every wait of one message: for a permit, for the send, for the acknowledgement.
    timeout: Duration,
}

/// The in-flight part of a chain: sent, awaiting acknowledgement, oldest first.
type InFlight = VecDeque<(PublishAckFuture, BoxedSpan)>;

impl<'p> Publisher<'p> {
    pub(super) fn new(jetstream: &'p jetstream::Context, subjects: &'p Subjects, timeout: Duration) -> Self {
        Self { jetstream, subjects, timeout }
    }

    /// Publishes `items` in order, [`CHAIN_IN_FLIGHT`] at most awaiting acknowledgement, until
    /// the first failure. Returns how many were acknowledged (a prefix of `items`) and the
    /// failure of the next one.
    pub(super) async fn publish_chain<'a, T>(
        &'a self,
        items: &'a [T],
        step: impl Fn(&'a T) -> Result<Step<'a>, Failure>,
    ) -> (usize, Option<Failure>) {
        let mut in_flight = InFlight::new();
        let mut acknowledged = 0;
        for item in items {
            let failure = match step(item) {
                Ok(Step::Pipelined { subject, message, span }) => {
                    if let Err(failure) = self.settle(&mut in_flight, CHAIN_IN_FLIGHT - 1, &mut acknowledged).await {
                        return (acknowledged, Some(failure));
                    }
                    match self.send(subject, message).await {
                        Ok(ack) => {
                            in_flight.push_back((ack, span));
                            continue;
                        }
                        Err(failure) => failure,
                    }
                }
                Ok(Step::Alone(publish)) => {
                    if let Err(failure) = self.settle(&mut in_flight, 0, &mut acknowledged).await {
                        return (acknowledged, Some(failure));
                    }
                    match publish.await {
                        Ok(()) => {
                            acknowledged += 1;
                            continue;
                        }
                        Err(failure) => failure,
                    }
                }
                Err(failure) => failure,
            };
            // The items sent before this one may still be acknowledged; the failure reported is
            // that of the first that is not.
            let earlier = self.settle(&mut in_flight, 0, &mut acknowledged).await.err();
            return (acknowledged, Some(earlier.unwrap_or(failure)));
        }
        let failure = self.settle(&mut in_flight, 0, &mut acknowledged).await.err();
        (acknowledged, failure)
    }

    /// Awaits acknowledgements, oldest first, until at most `keep` are outstanding.
    async fn settle(&self, in_flight: &mut InFlight, keep: usize, acknowledged: &mut usize) -> Result<(), Failure> {
        while in_flight.len() > keep {
            let Some((ack, _span)) = in_flight.pop_front() else { break };
            self.acknowledgement(ack).await?;
            *acknowledged += 1;
        }
        Ok(())
    }

    /// One publish, awaited until JetStream acknowledged it.
    pub(super) async fn publish(&self, subject: String, message: PublishMessage) -> Result<(), Failure> {
        let ack = self.send(subject, message).await?;
        self.acknowledgement(ack).await
    }

    async fn send(&self, subject: String, message: PublishMessage) -> Result<PublishAckFuture, Failure> {
        self.bounded(self.jetstream.send_publish(subject, message)).await
    }

    async fn acknowledgement(&self, ack: PublishAckFuture) -> Result<(), Failure> {
        self.bounded(ack).await.map(drop)
    }

    async fn bounded<T>(&self, wait: impl IntoFuture<Output = Result<T, PublishError>>) -> Result<T, Failure> {
        match tokio::time::timeout(self.timeout, wait).await {
            Ok(outcome) => outcome.map_err(|error| self.failure(error)),
            Err(_elapsed) => Err(Failure::Stalled(self.timeout)),
        }
    }

    fn failure(&self, error: PublishError) -> Failure {
        match error.kind() {
            PublishErrorKind::MaxPayloadExceeded => Failure::TooLarge,
            PublishErrorKind::TimedOut => Failure::Stalled(self.timeout),
            _ => Failure::Publish(error),
        }
    }
}
