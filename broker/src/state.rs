//! What every request handler can reach.

use std::sync::Arc;

use parley_shared::auth::Verifier;

#[derive(Clone, Debug)]
pub struct BrokerState {
    pub nats: async_nats::Client,
    // Checks the WebSocket handshake once the relay lands; built at start so a bad key fails fast.
    #[allow(dead_code, reason = "the /ws handshake that reads it arrives with the relay")]
    pub verifier: Arc<Verifier>,
}
