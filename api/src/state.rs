//! What every request handler can reach.

use std::sync::Arc;

use parley_shared::auth::Verifier;
use sqlx::PgPool;

#[derive(Clone, Debug)]
pub struct AppState {
    pub db: PgPool,
    pub nats: async_nats::Client,
    // Used by the authenticated routes of the REST API; built at start so a bad key fails fast.
    #[allow(
        dead_code,
        reason = "the /v1 routes that read it arrive with the REST API"
    )]
    pub verifier: Arc<Verifier>,
}
