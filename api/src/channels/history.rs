//! Reading a durable channel's stored publications: pages for `GET …/publications`, and the
//! all-or-nothing recovery brokers ask for when a client subscribes with `since`.

use chrono::{DateTime, Utc};
use parley_shared::channels::{Channel, Namespace};
use parley_shared::publications::{ChannelPosition, ChannelState, Publication};
use sqlx::PgPool;

/// Most publications one recovery returns; a client further behind reads the REST pages.
const MAX_RECOVERED: i64 = 10_000;

/// Where the channel stands now.
pub async fn current(db: &PgPool, channel: &Channel) -> sqlx::Result<ChannelPosition> {
    let mut connection = db.acquire().await?;
    position(&mut connection, channel).await
}

/// A channel's position: its epoch (empty while nothing was ever published to it) and latest
/// offset (0 then).
async fn position(tx: &mut sqlx::PgConnection, channel: &Channel) -> sqlx::Result<ChannelPosition> {
    let row: Option<(String, i64)> = sqlx::query_as("select epoch, last_offset from channels where name = $1")
        .bind(channel.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    let (epoch, offset) = row.unwrap_or_default();
    Ok(ChannelPosition { offset, epoch })
}

/// One stored publication.
#[derive(Debug, sqlx::FromRow)]
pub struct Stored {
    pub offset: i64,
    pub data: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
}

/// Publications after `after`, at most `limit`, read in the same snapshot as the position.
pub struct Page {
    pub position: ChannelPosition,
    pub items: Vec<Stored>,
}

/// A snapshot: the position and the publications after `after` agree with each other.
async fn snapshot(tx: &mut sqlx::PgConnection) -> sqlx::Result<()> {
    sqlx::query("set transaction isolation level repeatable read, read only").execute(&mut *tx).await.map(drop)
}

/// Publications after `after` that the namespace still keeps (its `history_size` behind the
/// latest, within its `history_ttl`; older ones may not be deleted yet, but are not served).
async fn kept(
    tx: &mut sqlx::PgConnection,
    channel: &Channel,
    namespace: &Namespace,
    position: &ChannelPosition,
    after: i64,
    limit: i64,
) -> sqlx::Result<Vec<Stored>> {
    let after = after.max(position.offset - i64::from(namespace.history_size));
    sqlx::query_as(
        r#"select "offset", data, occurred_at from channel_publications
            where channel = $1 and "offset" > $2 and occurred_at >= now() - make_interval(secs => $3)
            order by "offset" limit $4"#,
    )
    .bind(channel.as_str())
    .bind(after)
    .bind(namespace.history_ttl.as_secs_f64())
    .bind(limit)
    .fetch_all(&mut *tx)
    .await
}

pub async fn page(db: &PgPool, channel: &Channel, namespace: &Namespace, after: i64, limit: i64) -> sqlx::Result<Page> {
    let mut tx = db.begin().await?;
    snapshot(&mut tx).await?;
    let position = position(&mut tx, channel).await?;
    let items = kept(&mut tx, channel, namespace, &position, after, limit).await?;
    crate::db::commit(tx).await?;
    Ok(Page { position, items })
}

/// Where the channel stands and, for `since`, every publication after it, if all of them are
/// still stored and fit in `max_bytes`; otherwise `recovered: false` and none.
pub async fn recover(
    db: &PgPool,
    channel: &Channel,
    namespace: &Namespace,
    since: Option<&ChannelPosition>,
    max_bytes: usize,
) -> sqlx::Result<ChannelState> {
    let Some(since) = since else {
        return Ok(ChannelState { position: current(db, channel).await?, recovered: true, publications: Vec::new() });
    };
    let missed = |position: &ChannelPosition| position.offset.saturating_sub(since.offset);
    let mut tx = db.begin().await?;
    snapshot(&mut tx).await?;
    let position = position(&mut tx, channel).await?;
    // Offset 0 holds nothing, whatever the epoch; otherwise the epoch must be this history's.
    let same_history = since.offset == 0 || since.epoch == position.epoch;
    if !same_history || since.offset < 0 || !(0..=MAX_RECOVERED).contains(&missed(&position)) {
        return Ok(ChannelState { position, recovered: false, publications: Vec::new() });
    }
    let rows = kept(&mut tx, channel, namespace, &position, since.offset, missed(&position)).await?;
    crate::db::commit(tx).await?;
    let bytes: usize = rows.iter().map(|row| row.data.to_string().len()).sum();
    let complete = i64::try_from(rows.len()).is_ok_and(|count| count == missed(&position))
        && rows.first().is_none_or(|row| row.offset == since.offset + 1)
        && bytes <= max_bytes;
    let publications = if complete {
        rows.into_iter()
            .map(|row| Publication::durable(channel.as_str(), row.offset, &position.epoch, row.data))
            .collect()
    } else {
        Vec::new()
    };
    Ok(ChannelState { position, recovered: complete, publications })
}
