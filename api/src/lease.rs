//! A lease for work one API instance does at a time (the outbox relay, the push dispatcher): a
//! PostgreSQL advisory lock on a session of its own that PostgreSQL ends when the holder stops
//! renewing it.
//!
//! A session-scoped lock alone outlives a holder that is frozen (SIGSTOP, a stalled VM) or cut
//! off, because its session stays open. So the session runs with `idle_session_timeout` = the
//! lease's TTL and is renewed (pinged) every third of it: a holder that stops renewing loses its
//! session, hence the lock, one TTL after its last renewal, and the next instance waiting on
//! the lock takes over. The holder itself stops publishing before that: it counts its lease
//! from when its last successful renewal was *sent*, which is never later than PostgreSQL
//! counts it, and treats it as over a margin before the TTL, so a holder that wakes up from a
//! freeze finds its lease stale and publishes nothing.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::{Connection, PgConnection};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Opens the session a lease lives on: PostgreSQL ends it after `ttl` without a statement.
pub async fn session(database_url: &str, ttl: Duration) -> Result<PgConnection, sqlx::Error> {
    let mut connection = PgConnection::connect(database_url).await?;
    // Whole milliseconds, at least one: 0 would mean "never".
    let millis = ttl.as_millis().clamp(1, i32::MAX as u128);
    match sqlx::query(&format!("set idle_session_timeout = {millis}")).execute(&mut connection).await {
        Ok(_) => {}
        // 42704 undefined_object: PostgreSQL before 14. The lock still works, without expiry.
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42704") => {
            tracing::warn!("PostgreSQL < 14 has no idle_session_timeout: a frozen lease holder keeps its lease");
        }
        Err(error) => return Err(error),
    }
    Ok(connection)
}

/// A held lease, renewed in the background until dropped (dropping closes the session, which
/// releases the lock).
#[derive(Debug)]
pub struct Lease {
    ttl: Duration,
    /// When the last renewal that succeeded was sent.
    renewed: Arc<Mutex<Instant>>,
    lost: CancellationToken,
    keeper: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Keeps `session` (which holds the lock, acquired at `acquired`) renewed every third of `ttl`.
    /// `what` names the holder's work in logs.
    pub fn keep(mut session: PgConnection, ttl: Duration, acquired: Instant, what: &'static str) -> Self {
        let renewed = Arc::new(Mutex::new(acquired));
        let lost = CancellationToken::new();
        let keeper = {
            let (renewed, lost) = (Arc::clone(&renewed), lost.clone());
            tokio::spawn(async move {
                let every = ttl / 3;
                loop {
                    tokio::time::sleep(every).await;
                    let sent = Instant::now();
                    match tokio::time::timeout(every, session.ping()).await {
                        Ok(Ok(())) => *renewed.lock().unwrap_or_else(PoisonError::into_inner) = sent,
                        Ok(Err(error)) => {
                            tracing::warn!(%error, "{what} lost its lease; waiting to take it again");
                            break;
                        }
                        Err(_elapsed) => {
                            tracing::warn!(?every, "{what} could not renew its lease in time; giving it up");
                            break;
                        }
                    }
                }
                lost.cancel();
            })
        };
        Self { ttl, renewed, lost, keeper }
    }

    /// Whether the lease certainly still holds: renewed less than 80 % of its TTL ago.
    pub fn fresh(&self) -> bool {
        let renewed = *self.renewed.lock().unwrap_or_else(PoisonError::into_inner);
        !self.lost.is_cancelled() && renewed.elapsed() < self.ttl.mul_f64(0.8)
    }

    /// Resolves once the lease is lost.
    pub async fn lost(&self) {
        self.lost.cancelled().await;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}
