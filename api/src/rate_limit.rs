//! Per-user rate limits (token buckets from `governor`): one for writes, one for typing
//! signals per user and conversation. A refusal is 429 with `Retry-After`.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use parley_shared::ids::{ConversationId, UserId};

use crate::config::Limits;
use crate::error::ApiError;

/// Forget idle keys every this many checks, so the maps stay bounded by recent users.
const RETAIN_EVERY: u64 = 4096;

#[derive(Debug)]
pub struct RateLimits {
    writes: DefaultKeyedRateLimiter<UserId>,
    typing: DefaultKeyedRateLimiter<(UserId, ConversationId)>,
    checks: AtomicU64,
}

impl RateLimits {
    pub fn new(limits: &Limits) -> Self {
        let per_second = NonZeroU32::new(limits.write_rate_per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(limits.write_burst.max(1)).unwrap_or(NonZeroU32::MIN);
        // One typing signal per 2 s per conversation, with a little slack for start/stop pairs.
        let typing = Quota::with_period(Duration::from_secs(2))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(3).unwrap_or(NonZeroU32::MIN));
        Self {
            writes: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            typing: RateLimiter::keyed(typing),
            checks: AtomicU64::new(0),
        }
    }

    pub fn write(&self, user: UserId) -> Result<(), ApiError> {
        self.housekeeping();
        self.writes
            .check_key(&user)
            .map_err(|not_until| too_many(not_until.wait_time_from(DefaultClock::default().now())))
    }

    pub fn typing(&self, user: UserId, conversation: ConversationId) -> Result<(), ApiError> {
        self.housekeeping();
        self.typing
            .check_key(&(user, conversation))
            .map_err(|not_until| too_many(not_until.wait_time_from(DefaultClock::default().now())))
    }

    fn housekeeping(&self) {
        if self.checks.fetch_add(1, Ordering::Relaxed) % RETAIN_EVERY == RETAIN_EVERY - 1 {
            self.writes.retain_recent();
            self.typing.retain_recent();
        }
    }
}

fn too_many(wait: Duration) -> ApiError {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ApiError::too_many_requests(seconds.max(1))
}
