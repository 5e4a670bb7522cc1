//! What every request handler can reach.

use std::sync::Arc;

use parley_shared::auth::Verifier;
use parley_shared::subjects::Subjects;
use sqlx::PgPool;

use crate::auth::SeenUsers;
use crate::channels::server_keys::ServerKeys;
use crate::config::Limits;
use crate::metrics::Metrics;
use crate::presence::PresenceView;
use crate::rate_limit::RateLimits;
use crate::relay::Outbox;
use crate::sending::Sending;
use parley_shared::channels::Namespaces;

#[derive(Clone, Debug)]
pub struct AppState {
    pub db: PgPool,
    pub nats: async_nats::Client,
    pub subjects: Subjects,
    pub outbox: Outbox,
    /// Where sent messages queue to be committed together.
    pub sending: Sending,
    pub metrics: Arc<Metrics>,
    pub verifier: Arc<Verifier>,
    pub users: Arc<SeenUsers>,
    pub limits: Limits,
    pub rate_limits: Arc<RateLimits>,
    pub presence: PresenceView,
    pub namespaces: Arc<Namespaces>,
    pub server_keys: Arc<ServerKeys>,
    /// Push settings, for checking targets as they are registered.
    pub push: Arc<crate::push::PushConfig>,
    /// The VAPID identity, when Web Push is configured.
    pub vapid: Option<Arc<crate::push::Vapid>>,
}
