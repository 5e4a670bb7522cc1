//! Reading what reached JetStream: the events stream, message by message, for assertions.

use std::time::Duration;

use anyhow::Context;
use parley_shared::events::Envelope;
use parley_shared::subjects::{NOTIFICATION_KIND, Subjects};

use crate::wait;

/// One message of the events stream.
#[derive(Clone, Debug)]
pub struct StreamEvent {
    pub stream_seq: u64,
    pub subject: String,
    /// The `Nats-Msg-Id` header.
    pub message_id: String,
    pub traceparent: Option<String>,
    pub envelope: Envelope,
}

/// Every domain event in the events stream (conversation and user subjects), in stream order.
/// The stream's other messages, channel publications and notification frames, are skipped.
pub async fn read_all(nats_url: &str, subjects: &Subjects) -> anyhow::Result<Vec<StreamEvent>> {
    let (conversations, users) = (format!("{}.conv.", subjects.prefix()), format!("{}.user.", subjects.prefix()));
    let notification = format!(".{NOTIFICATION_KIND}");
    let client = async_nats::connect(nats_url).await?;
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream.get_stream(subjects.stream_name()).await?;
    let last = stream.info().await?.state.last_sequence;
    let mut events = Vec::new();
    for stream_seq in 1..=last {
        let message = match stream.get_raw_message(stream_seq).await {
            Ok(message) => message,
            Err(error) if error.kind() == async_nats::jetstream::stream::RawMessageErrorKind::NoMessageFound => {
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        let subject = message.subject.as_str();
        let event = subject.starts_with(&conversations) || subject.starts_with(&users);
        if !event || subject.ends_with(&notification) {
            continue;
        }
        let header = |name: &str| message.headers.get(name).map(|value| value.as_str().to_owned());
        events.push(StreamEvent {
            stream_seq,
            subject: message.subject.to_string(),
            message_id: header("Nats-Msg-Id").with_context(|| format!("no Nats-Msg-Id in {:?}", message.headers))?,
            traceparent: header("traceparent"),
            envelope: serde_json::from_slice(&message.payload)
                .with_context(|| format!("stream message {stream_seq} is not an envelope"))?,
        });
    }
    Ok(events)
}

/// Waits until the stream holds at least `count` domain events, then returns all of them.
pub async fn wait_for(
    nats_url: &str,
    subjects: &Subjects,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<StreamEvent>> {
    let what = format!("{count} messages in the events stream");
    wait::until(&what, timeout, || async {
        read_all(nats_url, subjects).await.ok().filter(|events| events.len() >= count)
    })
    .await
}
