//! The real `parley-broker` binary against real NATS: start, readiness through an outage,
//! graceful stop. It is given no database at all.

use std::time::Duration;

use parley_broker::{Application, Config};
use parley_testkit::{TestContext, wait};
use serde_json::Value;

const RECOVERY: Duration = Duration::from_secs(30);

/// Waits until `GET url` answers `status`, returning the body.
async fn until_status(url: String, status: u16) -> Value {
    wait::until_http_status(&url, status, RECOVERY).await.unwrap_or_else(|error| panic!("{error}"))
}

#[tokio::test]
async fn broker_is_ready_only_while_nats_is_connected() {
    let mut ctx = TestContext::with_own_services().await;
    let broker = ctx.spawn_broker().await;
    until_status(format!("{}/health", broker.url()), 200).await;
    let body = until_status(format!("{}/ready", broker.url()), 200).await;
    assert_eq!(body["checks"]["nats"], "ok");

    ctx.nats().kill();
    let body = until_status(format!("{}/ready", broker.url()), 503).await;
    assert_ne!(body["checks"]["nats"], "ok");
    until_status(format!("{}/health", broker.url()), 200).await;

    ctx.nats().start_again().await.expect("restart nats");
    until_status(format!("{}/ready", broker.url()), 200).await;
}

#[tokio::test]
async fn broker_starts_before_nats_and_becomes_ready_when_nats_arrives() {
    let mut ctx = TestContext::with_own_services().await;
    ctx.nats().kill();
    let broker = ctx.spawn_broker().await;
    until_status(format!("{}/ready", broker.url()), 503).await;
    ctx.nats().start_again().await.expect("start nats");
    until_status(format!("{}/ready", broker.url()), 200).await;
}

#[tokio::test]
async fn sigterm_stops_the_broker_cleanly() {
    let ctx = TestContext::start().await;
    let mut broker = ctx.spawn_broker().await;
    let status = broker.terminate().await.expect("exits within the shutdown deadline");
    assert!(status.success(), "exit status {status}; log:\n{}", broker.log_tail(20));
    assert!(broker.log_tail(5).contains("parley-broker stopped"));
}

#[tokio::test]
async fn in_process_broker_binds_port_zero() {
    let ctx = TestContext::start().await;
    let mut config = Config::from_env();
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.service.nats.url = ctx.nats_url();
    let app = Application::build(config).await.expect("build");
    let addr = app.local_addr();
    assert_ne!(addr.port(), 0);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    until_status(format!("http://{addr}/health"), 200).await;
    stop.send(()).expect("server still running");
    tokio::time::timeout(RECOVERY, server).await.expect("stops").expect("joins").expect("clean exit");
}

#[tokio::test]
async fn the_broker_serves_its_asyncapi_document() {
    let ctx = TestContext::with_own_services().await;
    let broker = ctx.spawn_broker().await;
    let response = reqwest::get(format!("{}/asyncapi.yaml", broker.url())).await.expect("GET /asyncapi.yaml");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/yaml");
    let document: Value = serde_norway::from_str(&response.text().await.expect("body")).expect("YAML");
    assert_eq!(document, parley_broker::asyncapi::websocket_document(), "the served document is the code's");
}

#[tokio::test]
async fn an_upgrade_of_another_websocket_version_is_told_to_use_13() {
    let ctx = TestContext::start().await;
    let broker = ctx.spawn_broker().await;
    let response = reqwest::Client::new()
        .get(format!("{}/ws", broker.url()))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "8")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .expect("GET /ws");
    assert_eq!(response.status(), 426);
    assert_eq!(response.headers()["sec-websocket-version"], "13");
    let problem: Value = response.json().await.expect("problem JSON");
    assert_eq!(problem["code"], "unsupported_websocket_version");
}
