//! Spans leave the process over OTLP/HTTP when an endpoint is configured.

use std::time::Duration;

use parley_testkit::otlp::accept_export;
use parley_testkit::{Binary, TestContext};
use tokio::net::TcpListener;

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
    let export = tokio::time::timeout(Duration::from_secs(15), accept_export(&sink)).await.expect("an OTLP export");
    assert_eq!(export.request_line, "POST /v1/traces HTTP/1.1");
}
