//! A lean HTTP/1.1 load client: one keep-alive connection per simulated client, requests sent
//! back to back. reqwest's pool and middleware cost as much CPU per request as a third of the
//! API's own work; on a 2-core machine shared with the server under test that is measured as
//! the API's slowness, so the benchmark drives hyper's connection API directly.

use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    authorization: String,
}

impl Connection {
    pub async fn open(addr: SocketAddr, token: &str) -> anyhow::Result<Self> {
        Self::open_with_authorization(addr, format!("Bearer {token}")).await
    }

    /// With any `Authorization` value (a backend's `ApiKey <key>`).
    pub async fn open_with_authorization(addr: SocketAddr, authorization: String) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // Ends when the connection closes, which dropping `sender` causes.
        tokio::spawn(connection);
        Ok(Self { sender, host: addr.to_string(), authorization })
    }

    /// Sends one request and reads the whole response; returns its status.
    pub async fn send(&mut self, method: Method, path: &str, json: Option<Bytes>) -> anyhow::Result<StatusCode> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.host)
            .header(header::AUTHORIZATION, &self.authorization);
        let body = match json {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Full::new(json)
            }
            None => Full::new(Bytes::new()),
        };
        self.sender.ready().await?;
        let response = self.sender.send_request(request.body(body)?).await?;
        let status = response.status();
        response.into_body().collect().await?;
        Ok(status)
    }
}
