//! Deleting published events past their retention. Unpublished events are never deleted, and
//! a conversation's published events are always a seq-prefix of its events (they are published
//! in seq order), so pruning by age removes a prefix: the catch-up endpoint detects the hole
//! and answers 410.

use std::time::Duration;

use sqlx::PgPool;

/// Rows deleted per statement, to keep each transaction and its locks short.
const CHUNK: i64 = 10_000;

/// Deletes events published longer than `retention` ago; returns how many.
pub async fn published_before(db: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    let seconds = retention.as_secs_f64();
    let mut deleted = 0;
    loop {
        let chunk = sqlx::query(
            "delete from events where id in (
                 select id from events
                  where published_at < now() - make_interval(secs => $1)
                  limit $2)",
        )
        .bind(seconds)
        .bind(CHUNK)
        .execute(db)
        .await?
        .rows_affected();
        deleted += chunk;
        if chunk < u64::try_from(CHUNK).unwrap_or(u64::MAX) {
            return Ok(deleted);
        }
    }
}
