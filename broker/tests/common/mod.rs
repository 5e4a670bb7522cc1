//! One API, one broker, and WebSocket clients of that broker.

#![allow(dead_code, reason = "each test binary uses its own subset")]

use parley_testkit::rest::{User, unlimited_writes};
use parley_testkit::ws::WsClient;
use parley_testkit::{AppProcess, Binary, TestContext};

pub struct Stack {
    pub ctx: TestContext,
    pub api: AppProcess,
    pub broker: AppProcess,
}

impl Stack {
    pub async fn start() -> Self {
        Self::start_with(Vec::new()).await
    }

    pub async fn start_with(broker_env: Vec<(String, String)>) -> Self {
        Self::on(TestContext::start().await, broker_env).await
    }

    /// With a nats-server of the test's own, which it may stop and restart.
    pub async fn with_own_nats(broker_env: Vec<(String, String)>) -> Self {
        Self::on(TestContext::with_own_services().await, broker_env).await
    }

    /// With extra settings for the API too.
    pub async fn with_api_env(api_env: Vec<(String, String)>, broker_env: Vec<(String, String)>) -> Self {
        let ctx = TestContext::start().await;
        let api = ctx.spawn(Binary::Api, [unlimited_writes(), api_env].concat()).await;
        let broker = ctx.spawn(Binary::Broker, broker_env).await;
        Self { ctx, api, broker }
    }

    async fn on(ctx: TestContext, broker_env: Vec<(String, String)>) -> Self {
        let api = ctx.spawn(Binary::Api, unlimited_writes()).await;
        let broker = ctx.spawn(Binary::Broker, broker_env).await;
        Self { ctx, api, broker }
    }

    pub fn user(&self, name: &str) -> User {
        User::new(&self.ctx, &self.api.url(), name)
    }

    pub fn ws_url(&self) -> String {
        format!("{}/ws", self.broker.url().replace("http://", "ws://"))
    }

    pub async fn connect(&self, user: &User, name: &str) -> WsClient {
        WsClient::connect(&self.ws_url(), &self.ctx.token(user.id, name)).await
    }

    /// Connects from a socket whose receive buffer is `bytes` (the kernel doubles it): a
    /// client that reads slowly fills it, and the broker's writes then stop part-way.
    pub async fn connect_with_receive_buffer(&self, user: &User, name: &str, bytes: u32) -> WsClient {
        let address = self.broker.url().trim_start_matches("http://").parse().expect("broker address");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        let tcp = socket.connect(address).await.expect("TCP connection to the broker");
        let request = parley_testkit::ws::request_with_token(&self.ws_url(), &self.ctx.token(user.id, name));
        let plain = tokio_tungstenite::MaybeTlsStream::Plain(tcp);
        let (stream, _) = tokio_tungstenite::client_async(request, plain).await.expect("WebSocket handshake");
        WsClient::after_handshake(stream).await
    }
}

/// Environment pairs for a spawned binary.
pub fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect()
}
