//! The PostgreSQL pool and the migrations embedded from `migrations/`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool, Postgres, Transaction};

use crate::config::Config;

/// A connection idle for less than this is handed out without a liveness ping.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// After a connection was found lost, every connection is pinged before use for this long:
/// the others went with it (a restart, a failover, terminated sessions).
const DISTRUST_AFTER_LOSS: Duration = Duration::from_secs(10);

/// When (Unix milliseconds) a pooled connection was last found lost; 0: never.
static CONNECTION_LOST_AT: AtomicU64 = AtomicU64::new(0);

fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis().try_into().unwrap_or(u64::MAX))
}

/// Makes the pool ping every connection it hands out for a while, so that the next request
/// (and a retry) gets a live one.
pub fn distrust_pooled_connections() {
    CONNECTION_LOST_AT.store(now_millis(), Ordering::Relaxed);
}

fn distrusted() -> bool {
    let lost_at = CONNECTION_LOST_AT.load(Ordering::Relaxed);
    lost_at != 0 && now_millis().saturating_sub(lost_at) < DISTRUST_AFTER_LOSS.as_millis() as u64
}

/// Commits, noting for the request's retry that its writes may be in the database from now on.
pub async fn commit(tx: Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
    crate::retry::note_commit();
    tx.commit().await
}

pub async fn connect(config: &Config) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(config.db_max_connections)
        .acquire_timeout(config.db_acquire_timeout)
        // sqlx pings every connection it hands out: one extra round trip per request, a fifth
        // of the message POST's. Like HikariCP, ping only connections that sat idle for a
        // while; a busy connection that died fails its query, is discarded, the error maps to
        // 503 or the request is retried (`retry`), and all connections are pinged for a while.
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_AFTER_IDLE || distrusted() {
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
