//! Spans leave the process over OTLP/HTTP when an endpoint is configured.

use std::time::Duration;

use parley_testkit::{Binary, TestContext};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Accepts one HTTP request and answers 200; returns its request line.
async fn one_request(listener: &TcpListener) -> String {
    let (mut socket, _) = listener.accept().await.expect("accept");
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    // Read the head and the body (Content-Length), enough to answer.
    loop {
        let read = socket.read(&mut buffer).await.expect("read");
        request.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&request);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if request.len() >= head_end + 4 + length || read == 0 {
                break;
            }
        }
    }
    socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.expect("answer");
    String::from_utf8_lossy(&request).lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn spans_are_exported_over_otlp_http_when_an_endpoint_is_set() {
    let ctx = TestContext::start().await;
    let sink = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", sink.local_addr().expect("addr"));
    let mut api = ctx.spawn(Binary::Api, vec![("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint)]).await;
    let traced = reqwest::Client::new()
        .get(format!("{}/health", api.url()))
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .send()
        .await
        .expect("request");
    assert_eq!(traced.status(), 200);
    // A graceful stop flushes the batch at once.
    api.terminate().await;
    let request_line = tokio::time::timeout(Duration::from_secs(15), one_request(&sink)).await.expect("an OTLP export");
    assert_eq!(request_line, "POST /v1/traces HTTP/1.1");
}
