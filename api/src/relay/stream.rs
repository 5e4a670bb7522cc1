//! The JetStream stream that captures every persisted event, created or updated at start.

use async_nats::jetstream::{self, stream};
use parley_shared::subjects::Subjects;

use super::RelayConfig;

/// Creates the events stream, or brings an existing one to the configured settings.
pub async fn ensure(jetstream: &jetstream::Context, subjects: &Subjects, config: &RelayConfig) -> anyhow::Result<()> {
    let wanted = stream::Config {
        name: subjects.stream_name(),
        subjects: subjects.stream_subjects(),
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: config.stream_max_age,
        num_replicas: config.stream_replicas,
        duplicate_window: config.stream_duplicate_window,
        ..Default::default()
    };
    jetstream.create_or_update_stream(wanted).await?;
    Ok(())
}
