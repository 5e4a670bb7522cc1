//! Sending due deliveries to one provider, and recording what became of each: sent, retried
//! later (exponential backoff with jitter), dead after the last attempt, or its target deleted
//! when the provider says the device is gone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use parley_shared::notifications::Notification;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::notifications::NOTIFICATION_JSON;

use super::{Dispatcher, Outcome, Push, Target, expo, pause, webhook, webpush};

/// The providers, each delivered by a loop of its own.
pub(super) const PROVIDERS: [&str; 3] = ["expo", "webpush", "webhook"];
/// Deliveries sent per round and provider.
const BATCH: i64 = 500;
/// Retries back off from 1 s, doubling, to at most this.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

#[derive(sqlx::FromRow)]
struct Due {
    id: Uuid,
    attempts: i32,
    user_id: Uuid,
    #[sqlx(flatten)]
    target: Target,
    notification: sqlx::types::Json<Notification>,
}

pub(super) async fn run(dispatcher: Arc<Dispatcher>, provider: &'static str, done: CancellationToken) {
    let http = match reqwest::Client::builder().timeout(dispatcher.config.timeout).build() {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(%error, "cannot build the push HTTP client");
            return;
        }
    };
    let webhook_secrets = webhook::decode_secrets(&dispatcher.config.webhook_secrets);
    let mut full = false;
    // A full batch means more is due: the next round starts at once.
    while full || pause(&done).await {
        let sent = round(&dispatcher, &http, &webhook_secrets, provider);
        full = tokio::select! {
            outcome = sent => match outcome {
                Ok(sent) => sent == BATCH as usize,
                Err(error) => {
                    tracing::warn!(%error, provider, "delivering pushes failed; trying again");
                    false
                }
            },
            () = done.cancelled() => return,
        };
    }
}

/// Sends one batch of due deliveries; how many.
async fn round(
    dispatcher: &Dispatcher,
    http: &reqwest::Client,
    webhook_secrets: &[Vec<u8>],
    provider: &str,
) -> Result<usize, sqlx::Error> {
    let due: Vec<Due> = sqlx::query_as(&format!(
        "select d.id, d.attempts, n.user_id, t.id, t.kind, t.address, t.p256dh, t.auth,
                {NOTIFICATION_JSON} as notification
           from push_deliveries d
           join push_targets t on t.id = d.target_id
           join notifications n on n.id = d.notification_id
          where d.state = 'pending' and d.next_attempt_at <= now() and t.kind = $1
          order by d.next_attempt_at limit $2"
    ))
    .bind(provider)
    .bind(BATCH)
    .fetch_all(&dispatcher.db)
    .await?;
    if due.is_empty() {
        return Ok(0);
    }
    let users: Vec<Uuid> = due.iter().map(|due| due.user_id).collect();
    let badges: HashMap<Uuid, i64> = sqlx::query_as(
        "select user_id, count(*) from notifications where user_id = any($1) and read_at is null group by user_id",
    )
    .bind(&users)
    .fetch_all(&dispatcher.db)
    .await?
    .into_iter()
    .collect();
    let pushes: Vec<Push> = due
        .into_iter()
        .map(|due| Push {
            id: due.id,
            attempts: due.attempts,
            badge: badges.get(&due.user_id).copied().unwrap_or(0),
            user_id: due.user_id,
            target: due.target,
            notification: due.notification.0,
        })
        .collect();
    let config = &dispatcher.config;
    // Boxed: the futures borrow `pushes`, and the task that runs them must not name their types.
    let sends: Vec<BoxFuture<'_, Vec<Outcome>>> = match provider {
        "expo" => pushes.chunks(expo::MAX_BATCH).map(|batch| expo::send(http, config, batch).boxed()).collect(),
        "webpush" => pushes
            .iter()
            .map(|push| webpush::send(http, dispatcher.vapid.as_deref(), push).map(|outcome| vec![outcome]).boxed())
            .collect(),
        _ => pushes
            .iter()
            .map(|push| webhook::send(http, config, webhook_secrets, push).map(|outcome| vec![outcome]).boxed())
            .collect(),
    };
    let outcomes: Vec<Outcome> = futures_util::stream::iter(sends).buffered(config.concurrency).concat().await;
    record(dispatcher, provider, &pushes, &outcomes).await?;
    Ok(pushes.len())
}

/// Writes down what became of each push.
async fn record(
    dispatcher: &Dispatcher,
    provider: &str,
    pushes: &[Push],
    outcomes: &[Outcome],
) -> Result<(), sqlx::Error> {
    let (mut sent, mut gone) = (Vec::new(), Vec::new());
    let (mut failed, mut next_attempts, mut dead, mut errors) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (push, outcome) in pushes.iter().zip(outcomes) {
        let attempts = push.attempts + 1;
        let (label, error, is_dead) = match outcome {
            Outcome::Sent => {
                sent.push(push.id);
                dispatcher.metrics.count(provider, "sent");
                continue;
            }
            Outcome::TargetGone => {
                tracing::info!(target_id = %push.target.id, provider, "the provider says the device is gone; target deleted");
                gone.push(push.target.id);
                dispatcher.metrics.count(provider, "gone");
                continue;
            }
            Outcome::Retry(error) => ("retry", error, attempts >= dispatcher.config.max_attempts),
            Outcome::Rejected(error) => ("rejected", error, true),
        };
        dispatcher.metrics.count(provider, if is_dead { "dead" } else { label });
        if is_dead {
            tracing::warn!(push_id = %push.id, provider, attempts, %error, "push given up (dead)");
        }
        failed.push(push.id);
        next_attempts.push(Utc::now() + chrono::Duration::from_std(backoff(attempts)).unwrap_or_default());
        dead.push(is_dead);
        errors.push(error.clone());
    }
    let mut tx = dispatcher.db.begin().await?;
    sqlx::query(
        "update push_deliveries set state = 'sent', attempts = attempts + 1, updated_at = now() where id = any($1)",
    )
    .bind(&sent)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "update push_deliveries d
            set attempts = d.attempts + 1, updated_at = now(), last_error = failed.error,
                next_attempt_at = failed.next_attempt_at,
                state = case when failed.dead then 'dead' else 'pending' end
           from unnest($1::uuid[], $2::timestamptz[], $3::bool[], $4::text[])
                    as failed (id, next_attempt_at, dead, error)
          where d.id = failed.id",
    )
    .bind(&failed)
    .bind(&next_attempts)
    .bind(&dead)
    .bind(&errors)
    .execute(&mut *tx)
    .await?;
    sqlx::query("delete from push_targets where id = any($1)").bind(&gone).execute(&mut *tx).await?;
    tx.commit().await
}

/// 1 s, 2 s, 4 s … at most [`MAX_BACKOFF`], each between half and all of it (jitter, so that
/// pushes that failed together do not retry together).
fn backoff(attempts: i32) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1)).unwrap_or(0).min(16);
    let full = Duration::from_secs(1).saturating_mul(2u32.saturating_pow(exponent)).min(MAX_BACKOFF);
    full.mul_f64(0.5 + fastrand::f64() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_with_jitter_up_to_the_bound() {
        for _ in 0..100 {
            let first = backoff(1);
            assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(1), "{first:?}");
            let fourth = backoff(4);
            assert!(fourth >= Duration::from_secs(4) && fourth <= Duration::from_secs(8), "{fourth:?}");
            assert!(backoff(40) <= MAX_BACKOFF);
        }
    }
}
