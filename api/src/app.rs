//! Building and running the API server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use parley_shared::address_limit::AddressLimit;
use parley_shared::http_server;
use poem::endpoint::make_sync;
use poem::listener::TcpAcceptor;
use poem::middleware::CatchPanic;
use poem::web::{Html, Json};
use poem::{EndpointExt, Request, Route, get};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::auth::SeenUsers;
use crate::body_errors::PlainBodyErrors;
use crate::body_limit::BodyLimit;
use crate::broker_requests::MembershipResponder;
use crate::channels::requests::ChannelResponder;
use crate::channels::server_keys::ServerKeys;
use crate::config::Config;
use crate::cors::Cors;
use crate::error::{ApiError, problem_for_panic, problem_for_unhandled};
use crate::metrics::Metrics;
use crate::presence::{PresenceKeeper, PresenceView};
use crate::push::Dispatcher;
use crate::rate_limit::RateLimits;
use crate::relay::{Outbox, Relay};
use crate::request_span::RequestSpan;
use crate::retry::RetryOnLostConnection;
use crate::route_templates::RouteTemplates;
use crate::state::AppState;
use crate::{db, routes, sending};

/// A bound, ready-to-serve API: tests build it on port 0 and read [`Application::local_addr`].
pub struct Application {
    acceptor: TcpAcceptor,
    local_addr: SocketAddr,
    state: AppState,
    config: Config,
    /// Counts the NATS client's connections (for the relay).
    nats_connections: watch::Receiver<u64>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application").field("local_addr", &self.local_addr).finish_non_exhaustive()
    }
}

impl Application {
    /// Connects PostgreSQL (failing fast when it is unreachable), applies migrations, starts the
    /// NATS client (which keeps retrying in the background: `/ready` reports it) and binds.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let verifier = Arc::new(config.service.auth.build()?);
        crate::push::check_secrets(&config.push)?;
        let vapid = crate::push::Vapid::from_config(&config.push)?.map(Arc::new);
        let db = db::connect(&config).await.context("connecting to PostgreSQL (DATABASE_URL)")?;
        db::migrate(&db).await.context("applying migrations")?;
        let (connected, nats_connections) = watch::channel(0);
        let nats = parley_shared::nats::connect(&config.service.nats, "parley-api", move |event| {
            if matches!(event, async_nats::Event::Connected) {
                connected.send_modify(|connections| *connections += 1);
            }
        })
        .await?;
        let (acceptor, local_addr) = parley_shared::serve::bind(config.listen).await?;
        let outbox = Outbox::default();
        let metrics = Arc::new(Metrics::default());
        let sending = sending::sending(db.clone(), outbox.clone(), metrics.messages_per_commit.clone());
        Ok(Self {
            acceptor,
            local_addr,
            state: AppState {
                db,
                nats,
                subjects: config.service.nats_prefix.clone(),
                sending,
                outbox,
                metrics,
                verifier,
                users: Arc::new(SeenUsers::default()),
                limits: config.limits.clone(),
                rate_limits: Arc::new(RateLimits::new(&config.limits)),
                presence: PresenceView::default(),
                namespaces: Arc::new(config.service.channels.clone()),
                server_keys: Arc::new(ServerKeys::new(&config.server_api_keys)?),
                push: Arc::new(config.push.clone()),
                vapid,
            },
            config,
            nats_connections,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish (up to the configured
    /// timeout) and flushes NATS.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let Self { acceptor, local_addr, state, config, nats_connections } = self;
        tracing::info!(%local_addr, "parley-api listening");
        let api = routes::api_service();
        let spec = routes::spec_json();
        // Swagger UI embeds the document it shows: ours, not poem-openapi's.
        let docs = api.swagger_ui_html().replace(&api.spec(), &spec);
        let templates = Arc::new(RouteTemplates::from_spec(&spec));
        let spec: serde_json::Value = serde_json::from_str(&spec)?;
        let plain_body_errors = PlainBodyErrors::new(&spec);
        let unhandled = {
            let templates = templates.clone();
            move |error| {
                let templates = templates.clone();
                async move { problem_for_unhandled(error, &templates).await }
            }
        };
        let app = Route::new()
            .at("/health", get(routes::health::health))
            .at("/ready", get(routes::health::ready))
            .at("/metrics", get(routes::health::metrics))
            .at("/openapi.json", get(make_sync(move |_| Json(spec.clone()))))
            .at("/docs", get(make_sync(move |_| Html(docs.clone()))))
            // Every operation's path starts with `/v1`, which leaves `/` free.
            .nest_no_strip("/v1", api.with(plain_body_errors).with(RetryOnLostConnection))
            .at("/", get(routes::health::to_docs))
            .with(BodyLimit::new(state.limits.max_body_bytes))
            .catch_all_error(unhandled)
            // A bug must cost one request a 500, never the connection or the process.
            .with(CatchPanic::new().with_handler(problem_for_panic))
            .data(state.clone())
            .with(AddressLimit::new(&config.service.address_limit, without_credentials, |seconds| {
                poem::Error::from(ApiError::too_many_requests(seconds)).into_response()
            }))
            .with(Cors::new(&config.allowed_origins))
            .with(RequestSpan::new(state.metrics.http.clone(), templates));
        let stop_relay = CancellationToken::new();
        let relay = Relay {
            db: db::connect_relay(&config)?,
            database_url: config.database_url.clone(),
            nats: state.nats.clone(),
            subjects: state.subjects.clone(),
            config: config.relay.clone(),
            outbox: state.outbox.clone(),
            metrics: state.metrics.outbox.clone(),
            namespaces: Arc::clone(&state.namespaces),
            nats_connections,
        };
        let relay = tokio::spawn(relay.run(stop_relay.clone()));
        let responder =
            MembershipResponder { db: state.db.clone(), nats: state.nats.clone(), subjects: state.subjects.clone() };
        let responder = tokio::spawn(responder.run(stop_relay.clone()));
        let channel_responder = tokio::spawn(ChannelResponder { state: state.clone() }.run(stop_relay.clone()));
        let presence = PresenceKeeper {
            view: state.presence.clone(),
            db: state.db.clone(),
            nats: state.nats.clone(),
            subjects: state.subjects.clone(),
            replicas: config.relay.stream_replicas,
            auto_max_members: config.service.presence_auto_max_members,
        };
        let presence = tokio::spawn(presence.run(stop_relay.clone()));
        let dispatcher = Dispatcher {
            db: state.db.clone(),
            database_url: config.database_url.clone(),
            presence: state.presence.clone(),
            config: config.push.clone(),
            vapid: state.vapid.clone(),
            metrics: state.metrics.push.clone(),
        };
        let dispatcher = tokio::spawn(dispatcher.run(stop_relay.clone()));
        http_server::serve(acceptor, app, &config.service.http, shutdown, config.service.shutdown_timeout).await;
        // The server has finished its requests: let the relay publish what they committed.
        stop_relay.cancel();
        if tokio::time::timeout(config.service.shutdown_timeout, relay).await.is_err() {
            tracing::warn!("outbox relay did not finish in time; another instance publishes the rest");
        }
        let _ = responder.await;
        let _ = channel_responder.await;
        let _ = presence.await;
        let _ = dispatcher.await;
        if let Err(error) = state.nats.flush().await {
            tracing::warn!(%error, "NATS flush at shutdown failed");
        }
        state.db.close().await;
        tracing::info!("parley-api stopped");
        Ok(())
    }
}

/// A `/v1` request with neither a bearer token nor a server key (public channel reads), other
/// than a CORS preflight (which never carries credentials).
fn without_credentials(request: &Request) -> bool {
    request.method() != poem::http::Method::OPTIONS
        && request.uri().path().starts_with("/v1")
        && !request.headers().contains_key(poem::http::header::AUTHORIZATION)
        && !request.headers().contains_key("x-api-key")
}
