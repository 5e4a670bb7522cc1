//! The real `parley-api` binary against real PostgreSQL and NATS: start, readiness through
//! outages, graceful stop, migrations.

use std::time::Duration;

use parley_api::{Application, Config};
use parley_testkit::{Binary, TestContext, wait};
use serde_json::Value;

const RECOVERY: Duration = Duration::from_secs(30);

async fn get(url: String) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(&url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap_or_else(|error| panic!("GET {url}: {error}"));
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Waits until `GET url` answers `status`, returning the body.
async fn until_status(url: String, status: u16) -> Value {
    wait::until_http_status(&url, status, RECOVERY).await.unwrap_or_else(|error| panic!("{error}"))
}

#[tokio::test]
async fn api_answers_health_and_ready_when_postgres_and_nats_are_up() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    assert_eq!(get(format!("{}/health", api.url())).await, (200, serde_json::json!({ "status": "ok" })));
    let body = until_status(format!("{}/ready", api.url()), 200).await;
    assert_eq!(body["checks"]["postgres"], "ok");
    assert_eq!(body["checks"]["nats"], "ok");
}

#[tokio::test]
async fn ready_reports_a_nats_outage_and_recovers_when_nats_returns() {
    let mut ctx = TestContext::with_own_services().await;
    let api = ctx.spawn_api().await;
    until_status(format!("{}/ready", api.url()), 200).await;

    ctx.nats().kill();
    let body = until_status(format!("{}/ready", api.url()), 503).await;
    assert_ne!(body["checks"]["nats"], "ok");
    assert_eq!(body["checks"]["postgres"], "ok");
    assert_eq!(get(format!("{}/health", api.url())).await.0, 200, "alive while not ready");

    ctx.nats().start_again().await.expect("restart nats");
    until_status(format!("{}/ready", api.url()), 200).await;
}

#[tokio::test]
async fn ready_reports_a_postgres_outage_and_recovers_when_postgres_returns() {
    let mut ctx = TestContext::with_own_services().await;
    let api = ctx.spawn_api().await;
    until_status(format!("{}/ready", api.url()), 200).await;

    ctx.postgres().kill();
    let body = until_status(format!("{}/ready", api.url()), 503).await;
    assert_ne!(body["checks"]["postgres"], "ok");

    ctx.postgres().start_again().await.expect("restart postgres");
    until_status(format!("{}/ready", api.url()), 200).await;
}

#[tokio::test]
async fn sigterm_stops_the_api_cleanly() {
    let ctx = TestContext::start().await;
    let mut api = ctx.spawn_api().await;
    let status = api.terminate().await.expect("exits within the shutdown deadline");
    assert!(status.success(), "exit status {status}; log:\n{}", api.log_tail(20));
    assert!(api.log_tail(5).contains("parley-api stopped"));
}

#[tokio::test]
async fn sigterm_with_100_requests_in_flight_on_kept_alive_connections_answers_all_100() {
    use parley_testkit::raw_http::{closed_within, read_response};
    use tokio::io::AsyncWriteExt;
    let ctx = TestContext::start().await;
    let mut api = ctx.spawn_api().await;
    // `/ready` asks PostgreSQL and NATS: a request with real work behind it.
    let request = format!("GET /ready HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n", api.port());
    let mut connections = Vec::new();
    for _ in 0..100 {
        let mut connection = tokio::net::TcpStream::connect(("127.0.0.1", api.port())).await.expect("connect");
        connection.write_all(request.as_bytes()).await.expect("send");
        read_response(&mut connection).await.expect("warm-up request answered");
        connections.push(connection);
    }
    // Frozen, the API receives all 100 requests (in its sockets) and then SIGTERM, and
    // meets them all at once when it thaws.
    api.pause();
    for connection in &mut connections {
        connection.write_all(request.as_bytes()).await.expect("send");
    }
    let pid = api.pid().expect("running").to_string();
    let thaw = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let resumed = std::process::Command::new("kill").args(["-CONT", &pid]).status().expect("run kill");
        assert!(resumed.success(), "SIGCONT failed");
    };
    let stopped = api.terminate();
    let answers = futures_util::future::join_all(connections.iter_mut().map(|connection| async move {
        let answer = read_response(connection).await;
        let closed = closed_within(connection, Duration::from_secs(10)).await.is_some();
        (answer, closed)
    }));
    let (status, answers, ()) = tokio::join!(stopped, answers, thaw);
    let status = status.expect("exits within the shutdown deadline");
    assert!(status.success(), "exit status {status}; log:\n{}", api.log_tail(20));
    let answered = answers
        .iter()
        .filter(|(answer, _)| matches!(answer, Some((head, _)) if head.starts_with("http/1.1 200")))
        .count();
    assert_eq!(answered, 100, "answered {answered} of the 100 requests in flight at SIGTERM");
    assert!(answers.iter().all(|(_, closed)| *closed), "a connection stayed open after shutdown");
}

#[tokio::test]
async fn a_request_head_trickled_on_a_kept_alive_connection_is_cut_at_the_header_deadline() {
    use parley_testkit::raw_http::{closed_within, read_response};
    use tokio::io::AsyncWriteExt;
    let ctx = TestContext::start().await;
    let api = ctx.spawn(Binary::Api, vec![("PARLEY_HTTP_HEADER_TIMEOUT".into(), "1s".into())]).await;
    let mut connection = tokio::net::TcpStream::connect(("127.0.0.1", api.port())).await.expect("connect");
    let request = format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n", api.port());
    connection.write_all(request.as_bytes()).await.expect("send");
    let (head, _) = read_response(&mut connection).await.expect("the first request is answered");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    // The next request's head, a byte every 250 ms (slowloris): cut about a second after its first byte.
    let started = std::time::Instant::now();
    let mut cut = None;
    for &byte in request.as_bytes().iter().cycle().take(60) {
        if connection.write_all(&[byte]).await.is_err()
            || closed_within(&mut connection, Duration::from_millis(250)).await.is_some()
        {
            cut = Some(started.elapsed());
            break;
        }
    }
    let cut = cut.expect("the trickled head was still accepted after 15 s");
    assert!(cut >= Duration::from_millis(800) && cut < Duration::from_secs(4), "cut after {cut:?}");
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout_and_a_busy_one_is_not() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ctx = TestContext::start().await;
    let api = ctx.spawn(Binary::Api, vec![("PARLEY_HTTP_IDLE_TIMEOUT".into(), "1s".into())]).await;
    let request = format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n", api.port());
    let mut connection = tokio::net::TcpStream::connect(("127.0.0.1", api.port())).await.expect("connect");
    let mut buffer = vec![0; 4096];
    // Requests every 400 ms keep it open past the timeout.
    for _ in 0..5 {
        connection.write_all(request.as_bytes()).await.expect("send");
        let read = connection.read(&mut buffer).await.expect("read");
        assert!(buffer[..read].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buffer[..read]));
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // Then silence: the API closes it (end of stream) soon after one idle second.
    let started = std::time::Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(10), connection.read(&mut buffer)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the idle connection stayed open: {read:?}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(500) && waited < Duration::from_secs(5), "closed after {waited:?}");
}

#[tokio::test]
async fn migrate_subcommand_creates_the_schema_in_an_empty_database() {
    let ctx = TestContext::start().await;
    let database_url = ctx.empty_database().await;
    let status = std::process::Command::new(Binary::Api.path().expect("parley-api binary"))
        .arg("migrate")
        .env("DATABASE_URL", &database_url)
        .env("NATS_URL", ctx.nats_url())
        .output()
        .expect("run parley-api migrate");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let pool = sqlx::PgPool::connect(&database_url).await.expect("connect");
    let users: i64 =
        sqlx::query_scalar("select count(*) from users").fetch_one(&pool).await.expect("users table exists");
    assert_eq!(users, 0);
}

#[tokio::test]
async fn api_refuses_to_start_without_postgres_and_says_why() {
    let ctx = TestContext::start().await;
    let output = std::process::Command::new(Binary::Api.path().expect("parley-api binary"))
        .env("DATABASE_URL", "postgres://parley@127.0.0.1:9/parley")
        .env("PARLEY_DB_ACQUIRE_TIMEOUT", "1s")
        .env("NATS_URL", ctx.nats_url())
        .env("PARLEY_API_LISTEN", "127.0.0.1:0")
        .output()
        .expect("run parley-api");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("connecting to PostgreSQL (DATABASE_URL)"), "{stderr}");
}

#[tokio::test]
async fn in_process_application_binds_port_zero_and_stops_on_signal() {
    let ctx = TestContext::start().await;
    let mut config = Config::from_env();
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.database_url = ctx.database_url().into();
    config.service.nats.url = ctx.nats_url();
    let app = Application::build(config).await.expect("build");
    let addr = app.local_addr();
    assert_ne!(addr.port(), 0);

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    assert_eq!(get(format!("http://{addr}/health")).await.0, 200);
    stop.send(()).expect("server still running");
    tokio::time::timeout(RECOVERY, server).await.expect("stops").expect("joins").expect("clean exit");
}

#[tokio::test]
async fn while_postgres_is_stopped_requests_answer_503_with_retry_after_never_500() {
    let mut ctx = TestContext::with_own_services().await;
    // Requests that find no connection wait this long for one.
    let api = ctx.spawn(Binary::Api, vec![("PARLEY_DB_ACQUIRE_TIMEOUT".into(), "1s".into())]).await;
    let alice = parley_testkit::rest::User::new(&ctx, &api.url(), "alice");
    let group = alice.group("outage", &[]).await;
    // Several pooled connections, each of which the shutdown will terminate (57P01).
    for n in 0..8 {
        alice.say(group, &format!("before {n}")).await;
    }
    ctx.postgres().stop().await;
    let messages = format!("/v1/conversations/{group}/messages");
    for n in 0..12 {
        let reply = if n % 2 == 0 {
            alice.get(&messages).await
        } else {
            alice.post(&messages, serde_json::json!({ "text": format!("during {n}") })).await
        };
        let retry_after = reply.headers.get("retry-after").and_then(|value| value.to_str().ok()).map(str::to_owned);
        reply.expect_problem(503, "unavailable");
        assert_eq!(retry_after.as_deref(), Some("1"), "request {n}");
    }
    ctx.postgres().start_again().await.expect("restart postgres");
    until_status(format!("{}/ready", api.url()), 200).await;
    let page = alice.get(&messages).await.expect(200);
    let texts: Vec<&str> = page["items"].as_array().expect("items").iter().filter_map(|m| m["text"].as_str()).collect();
    assert!(texts.iter().all(|text| text.starts_with("before")), "nothing answered 503 was stored: {texts:?}");
}

#[tokio::test]
async fn requests_that_meet_a_pooled_connection_postgres_terminated_are_retried_on_a_fresh_one() {
    use futures_util::future::join_all;
    let ctx = TestContext::start().await;
    let api = ctx.spawn(Binary::Api, parley_testkit::rest::unlimited_writes()).await;
    let alice = parley_testkit::rest::User::new(&ctx, &api.url(), "alice");
    let group = alice.group("before", &[]).await;
    let messages = format!("/v1/conversations/{group}/messages");
    // Connected first: from the warm-up to the requests must take well under the 1 s after
    // which the pool pings a connection anyway (and finds it dead without any retry).
    let pool = ctx.pool().await;
    // Concurrent requests leave several connections in the pool, just used (not pinged again).
    for reply in join_all((0..8).map(|_| alice.get(&messages))).await {
        reply.expect(200);
    }
    // PostgreSQL ends every session of the API (57P01), as a restart or a failover does.
    let terminated: i64 = sqlx::query_scalar(
        "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity
         where datname = current_database() and pid <> pg_backend_pid()) as ended",
    )
    .fetch_one(&pool)
    .await
    .expect("terminate the API's sessions");
    assert!(terminated >= 2, "terminated {terminated} sessions");

    // Reads and writes right after: each meets a dead connection, and is answered anyway.
    let reads = join_all((0..6).map(|_| alice.get(&messages)));
    let writes = join_all((0..4).map(|n| {
        alice.post("/v1/conversations", serde_json::json!({ "kind": "group", "title": format!("after {n}") }))
    }));
    let (reads, writes) = tokio::join!(reads, writes);
    for reply in reads {
        reply.expect(200);
    }
    for reply in writes {
        reply.expect(201);
    }
    // Each write stored once.
    let list = alice.get("/v1/conversations").await.expect(200);
    let mut titles: Vec<&str> =
        list["items"].as_array().expect("items").iter().filter_map(|c| c["title"].as_str()).collect();
    titles.sort_unstable();
    assert_eq!(titles, ["after 0", "after 1", "after 2", "after 3", "before"]);
    assert!(api.log_tail(400).contains("retrying a request on a fresh database connection"), "no request was retried");
}

#[tokio::test]
async fn message_sends_that_meet_a_pooled_connection_postgres_terminated_are_retried_on_a_fresh_one() {
    use futures_util::future::join_all;
    let ctx = TestContext::start().await;
    let api = ctx.spawn(Binary::Api, parley_testkit::rest::unlimited_writes()).await;
    let alice = parley_testkit::rest::User::new(&ctx, &api.url(), "alice");
    let groups = [alice.group("one", &[]).await, alice.group("two", &[]).await, alice.group("three", &[]).await];
    let pool = ctx.pool().await;
    // Reads of three conversations at once leave several connections in the pool.
    let paths: Vec<String> = groups.iter().map(|group| format!("/v1/conversations/{group}/messages")).collect();
    for reply in join_all(paths.iter().map(|path| alice.get(path))).await {
        reply.expect(200);
    }
    sqlx::query(
        "select pg_terminate_backend(pid) from pg_stat_activity
         where datname = current_database() and pid <> pg_backend_pid()",
    )
    .execute(&pool)
    .await
    .expect("terminate the API's sessions");
    // Each conversation's worker meets a dead connection before its commit: retried, stored once.
    let sends = paths.iter().map(|path| alice.post(path, serde_json::json!({ "text": "after" })));
    for reply in join_all(sends).await {
        reply.expect(201);
    }
    let stored: i64 = sqlx::query_scalar("select count(*) from messages where body = 'after'")
        .fetch_one(&pool)
        .await
        .expect("count messages");
    assert_eq!(stored, 3);
    assert!(api.log_tail(400).contains("retrying messages on a fresh database connection"), "no send was retried");
}
