//! The PostgreSQL pool and the migrations embedded from `migrations/`.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};

use crate::config::Config;

/// A connection idle for less than this is handed out without a liveness ping.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

pub async fn connect(config: &Config) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(config.db_max_connections)
        .acquire_timeout(config.db_acquire_timeout)
        // sqlx pings every connection it hands out: one extra round trip per request, a fifth
        // of the message POST's. Like HikariCP, ping only connections that sat idle for a
        // while; a busy connection that died fails its query, is discarded, and the error
        // maps to 503.
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_AFTER_IDLE {
                    connection.ping().await?;
                }
                Ok(true)
            })
        })
        .connect(&config.database_url)
        .await
}

/// The outbox relay's own small pool. Its writes only mark events published; losing one in a
/// crash means republishing events JetStream then drops as duplicates, so they need not wait
/// for the WAL flush (`synchronous_commit = off`), which would otherwise sit between every
/// publishing round and the next.
pub fn connect_relay(config: &Config) -> Result<PgPool, sqlx::Error> {
    let options = config.database_url.parse::<PgConnectOptions>()?.options([("synchronous_commit", "off")]);
    Ok(PgPoolOptions::new().max_connections(2).acquire_timeout(config.db_acquire_timeout).connect_lazy_with(options))
}

/// Applies pending migrations. Safe to run from several API instances at once: sqlx takes an
/// advisory lock for the duration.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("../migrations").run(pool).await
}
