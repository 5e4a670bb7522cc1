//! Building and running the broker.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use poem::listener::TcpAcceptor;
use poem::{EndpointExt, Route, Server};

use crate::config::Config;
use crate::routes;
use crate::state::BrokerState;

/// A bound, ready-to-serve broker: tests build it on port 0 and read [`Application::local_addr`].
pub struct Application {
    acceptor: TcpAcceptor,
    local_addr: SocketAddr,
    state: BrokerState,
    config: Config,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application").field("local_addr", &self.local_addr).finish_non_exhaustive()
    }
}

impl Application {
    /// Starts the NATS client (retrying in the background until NATS answers: `/ready` says
    /// when) and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let verifier = Arc::new(config.service.auth.build()?);
        let nats = parley_shared::serve::connect_nats(&config.service.nats_url, "parley-broker").await?;
        let (acceptor, local_addr) = parley_shared::serve::bind(config.listen).await?;
        Ok(Self { acceptor, local_addr, state: BrokerState { nats, verifier }, config })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves; then stops accepting, waits for open requests up to the
    /// configured timeout and drains the NATS client (pending messages are delivered first).
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let Self { acceptor, local_addr, state, config } = self;
        tracing::info!(%local_addr, ws_path = %config.ws_path, "parley-broker listening");
        let app = Route::new().nest("/", routes::health::routes()).data(state.clone());
        Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(app, shutdown, Some(config.service.shutdown_timeout))
            .await?;
        if let Err(error) = state.nats.drain().await {
            tracing::warn!(%error, "NATS drain at shutdown failed");
        }
        tracing::info!("parley-broker stopped");
        Ok(())
    }
}
