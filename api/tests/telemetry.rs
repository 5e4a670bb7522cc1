//! Spans leave the process over OTLP/HTTP when an endpoint is configured; every request gets an
//! access log line and per-route metrics.

use std::time::Duration;

use parley_testkit::otlp::accept_export;
use parley_testkit::rest::User;
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
    assert!(export.contains(b"GET /health"), "spans are named after the method and route template");
}

#[tokio::test]
async fn each_request_logs_one_line_and_counts_under_its_route_template() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let alice = User::new(&ctx, &api.url(), "Alice");
    let group = alice.group("logged", &[]).await;
    let secret_query = "before_seq=hunter2";
    alice
        .get(&format!("/v1/conversations/{group}/messages?{secret_query}"))
        .await
        .expect_problem(400, "validation_failed");
    alice.get(&format!("/v1/conversations/{group}/messages")).await.expect(200);
    alice.get("/no/such/path").await.expect_problem(404, "not_found");

    let metrics = reqwest::get(format!("{}/metrics", api.url())).await.expect("metrics").text().await.expect("text");
    let route = "/v1/conversations/{id}/messages";
    for series in [
        format!(r#"parley_http_requests_total{{method="GET",route="{route}",status="200"}} 1"#),
        format!(r#"parley_http_requests_total{{method="GET",route="{route}",status="400"}} 1"#),
        r#"parley_http_requests_total{method="POST",route="/v1/conversations",status="201"} 1"#.to_owned(),
        r#"parley_http_requests_total{method="GET",route="unmatched",status="404"} 1"#.to_owned(),
        format!(r#"parley_http_request_duration_seconds_count{{method="GET",route="{route}"}} 2"#),
    ] {
        assert!(metrics.lines().any(|line| line == series), "no `{series}` in\n{metrics}");
    }
    assert!(!metrics.contains(&group.to_string()), "no series per resource");

    let log = api.log_tail(100_000);
    let answered: Vec<&str> = log.lines().filter(|line| line.contains("request answered")).collect();
    let listing = answered.iter().filter(|line| line.contains(route)).count();
    assert_eq!(listing, 2, "one line per request:\n{}", answered.join("\n"));
    let line = answered.iter().find(|line| line.contains(route) && line.contains("400")).expect("the 400's line");
    assert!(line.contains(&alice.uuid().to_string()), "the user id: {line}");
    assert!(!log.contains("hunter2") && !log.contains(secret_query), "no query string in the log");
    assert!(!log.contains(alice.token().expect("token")), "no token in the log");
}
