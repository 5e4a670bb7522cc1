//! Deleting published events past their retention. Unpublished events are never deleted, and
//! a conversation's published events are always a seq-prefix of its events (they are published
//! in seq order), so pruning by age removes a prefix: the catch-up endpoint detects the hole
//! and answers 410.

use std::time::Duration;

use parley_shared::channels::Namespaces;
use sqlx::PgPool;

/// Rows deleted per statement, to keep each transaction and its locks short.
const CHUNK: i64 = 10_000;

/// Deletes, in each durable namespace, publications past its `history_ttl` or more than its
/// `history_size` behind their channel's latest, and publish Idempotency-Keys older than a day;
/// returns how many publications.
pub async fn publications(db: &PgPool, namespaces: &Namespaces) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    for (name, namespace) in namespaces.iter().filter(|(_, namespace)| namespace.is_durable()) {
        let query = || {
            sqlx::query(
                r#"delete from channel_publications where id in (
                     select p.id from channel_publications p join channels c on c.name = p.channel
                      where c.name like $1 || ':%' and p.published_at is not null
                        and (p.occurred_at < now() - make_interval(secs => $2) or p."offset" <= c.last_offset - $3)
                      limit $4)"#,
            )
            .bind(name)
            .bind(namespace.history_ttl.as_secs_f64())
            .bind(i64::from(namespace.history_size))
            .bind(CHUNK)
        };
        deleted += in_chunks(db, query).await?;
    }
    sqlx::query("delete from publish_idempotency_keys where created_at < now() - interval '1 day'").execute(db).await?;
    Ok(deleted)
}

/// Deletes events published longer than `retention` ago; returns how many.
pub async fn published_before(db: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    let seconds = retention.as_secs_f64();
    let query = || {
        sqlx::query(
            "delete from events where id in (
                 select id from events
                  where published_at < now() - make_interval(secs => $1)
                  limit $2)",
        )
        .bind(seconds)
        .bind(CHUNK)
    };
    in_chunks(db, query).await
}

/// Deletes notifications created longer than `retention` ago (none when it is zero), and
/// notification changes published more than a day ago; returns how many notifications.
pub async fn notifications(db: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    let changes = || {
        sqlx::query(
            "delete from notification_changes where position in (
                 select position from notification_changes
                  where published_at < now() - interval '1 day'
                  limit $1)",
        )
        .bind(CHUNK)
    };
    in_chunks(db, changes).await?;
    if retention.is_zero() {
        return Ok(0);
    }
    let seconds = retention.as_secs_f64();
    let notifications = || {
        sqlx::query(
            "delete from notifications where id in (
                 select id from notifications where created_at < now() - make_interval(secs => $1) limit $2)",
        )
        .bind(seconds)
        .bind(CHUNK)
    };
    in_chunks(db, notifications).await
}

/// Runs a `delete … limit CHUNK` until it deletes fewer than [`CHUNK`] rows; how many in all.
async fn in_chunks<'q>(
    db: &PgPool,
    query: impl Fn() -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    loop {
        let chunk = query().execute(db).await?.rows_affected();
        deleted += chunk;
        if chunk < u64::try_from(CHUNK).unwrap_or(u64::MAX) {
            return Ok(deleted);
        }
    }
}
