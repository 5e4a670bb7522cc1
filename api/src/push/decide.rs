//! Due queue entries → deliveries (push now), a later due time (wait for the grace delay), or
//! nothing (read, cleared, muted).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use parley_shared::ids::UserId;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Dispatcher, pause};
use crate::presence::PresenceStatus;

/// Queue entries decided per round.
const BATCH: i64 = 500;

#[derive(sqlx::FromRow)]
struct Due {
    notification_id: Uuid,
    user_id: Uuid,
    priority: String,
    read: bool,
    muted: bool,
    created_at: DateTime<Utc>,
}

/// What to do with one due entry.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Push,
    /// The user is connected and the notification unread: look again at this time.
    Wait(DateTime<Utc>),
    Drop,
}

pub(super) async fn run(dispatcher: Arc<Dispatcher>, done: CancellationToken) {
    let mut full = false;
    // A full batch means more is due: the next round starts at once.
    while full || pause(&done).await {
        full = match round(&dispatcher).await {
            Ok(decided) => decided == BATCH as usize,
            Err(error) => {
                tracing::warn!(%error, "deciding pushes failed; trying again");
                false
            }
        };
    }
}

/// Decides one batch of due entries; how many.
async fn round(dispatcher: &Dispatcher) -> Result<usize, sqlx::Error> {
    let due: Vec<Due> = sqlx::query_as(
        "select q.notification_id, n.user_id, n.priority, n.read_at is not null as read, n.created_at,
                coalesce(m.muted_until > now(), false) as muted
           from push_queue q
           join notifications n on n.id = q.notification_id
           left join conversation_members m
                  on m.user_id = n.user_id
                 and m.conversation_id = case when n.kind in ('mention', 'reply', 'direct', 'added')
                                              then (n.data ->> 'conversation_id')::uuid end
          where q.due_at <= now()
          order by q.due_at limit $1",
    )
    .bind(BATCH)
    .fetch_all(&dispatcher.db)
    .await?;
    if due.is_empty() {
        return Ok(0);
    }
    let now = Utc::now();
    let grace = chrono::Duration::from_std(dispatcher.config.grace_delay).unwrap_or_default();
    let (mut push, mut wait, mut wait_until, mut settled) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for entry in &due {
        let online = dispatcher.presence.of(UserId::from_uuid(entry.user_id)).status == PresenceStatus::Online;
        match decide(entry, online, now, grace) {
            Decision::Push => {
                push.push(entry.notification_id);
                settled.push(entry.notification_id);
            }
            Decision::Wait(until) => {
                wait.push(entry.notification_id);
                wait_until.push(until);
            }
            Decision::Drop => settled.push(entry.notification_id),
        }
    }
    let mut tx = dispatcher.db.begin().await?;
    // One delivery per target of each user; the id generated here is the push's stable id.
    let targets: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "select n.id, t.id from notifications n join push_targets t on t.user_id = n.user_id where n.id = any($1)",
    )
    .bind(&push)
    .fetch_all(&mut *tx)
    .await?;
    let ids: Vec<Uuid> = targets.iter().map(|_| Uuid::now_v7()).collect();
    let (notifications, target_ids): (Vec<Uuid>, Vec<Uuid>) = targets.into_iter().unzip();
    sqlx::query(
        "insert into push_deliveries (id, notification_id, target_id)
         select * from unnest($1::uuid[], $2::uuid[], $3::uuid[]) on conflict do nothing",
    )
    .bind(&ids)
    .bind(&notifications)
    .bind(&target_ids)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "update push_queue q set due_at = later.due_at
           from unnest($1::uuid[], $2::timestamptz[]) as later (notification_id, due_at)
          where q.notification_id = later.notification_id",
    )
    .bind(&wait)
    .bind(&wait_until)
    .execute(&mut *tx)
    .await?;
    sqlx::query("delete from push_queue where notification_id = any($1)").bind(&settled).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(due.len())
}

/// `high` priority and users without a live connection are pushed at once; a connected user's
/// notification once it is still unread after the grace delay; read or muted ones never.
fn decide(due: &Due, online: bool, now: DateTime<Utc>, grace: chrono::Duration) -> Decision {
    if due.read || due.muted {
        return Decision::Drop;
    }
    let grace_ends = due.created_at + grace;
    if due.priority == "high" || !online || grace_ends <= now { Decision::Push } else { Decision::Wait(grace_ends) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(priority: &str, read: bool, muted: bool, age_secs: i64, now: DateTime<Utc>) -> Due {
        let created_at = now - chrono::Duration::seconds(age_secs);
        let (notification_id, user_id) = (Uuid::now_v7(), Uuid::now_v7());
        Due { notification_id, user_id, priority: priority.into(), read, muted, created_at }
    }

    #[test]
    fn offline_users_and_high_priority_are_pushed_at_once_and_online_ones_after_the_grace_delay() {
        let now = Utc::now();
        let grace = chrono::Duration::seconds(10);
        assert_eq!(decide(&due("normal", false, false, 0, now), false, now, grace), Decision::Push);
        assert_eq!(decide(&due("high", false, false, 0, now), true, now, grace), Decision::Push);
        let fresh = due("normal", false, false, 3, now);
        assert_eq!(decide(&fresh, true, now, grace), Decision::Wait(fresh.created_at + grace));
        assert_eq!(decide(&due("normal", false, false, 10, now), true, now, grace), Decision::Push);
    }

    #[test]
    fn read_and_muted_notifications_are_never_pushed() {
        let now = Utc::now();
        let grace = chrono::Duration::seconds(10);
        assert_eq!(decide(&due("high", true, false, 0, now), false, now, grace), Decision::Drop);
        assert_eq!(decide(&due("high", false, true, 0, now), false, now, grace), Decision::Drop);
    }
}
