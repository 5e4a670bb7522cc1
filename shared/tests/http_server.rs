//! The shared HTTP server over real sockets: deadlines on kept-alive connections, early
//! refusals, and a shutdown that answers what it received.

use std::time::{Duration, Instant};

use parley_shared::http_server::{HttpArgs, serve};
use parley_testkit::raw_http::{closed_within, read_response};
use poem::http::StatusCode;
use poem::{Route, get, handler, post};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

#[handler]
async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_millis(300)).await;
    "slow"
}

#[handler]
fn fast() -> &'static str {
    "fast"
}

/// Refuses without reading the body, as an auth check or a body-size check does.
#[handler]
fn refuse() -> StatusCode {
    StatusCode::UNAUTHORIZED
}

#[handler]
async fn echo(body: String) -> String {
    body
}

struct Server {
    address: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    stopped: tokio::task::JoinHandle<()>,
}

async fn start(header_timeout: Duration, idle_timeout: Duration) -> Server {
    let (acceptor, address) =
        parley_shared::serve::bind("127.0.0.1:0".parse().expect("address")).await.expect("bind a free port");
    let app =
        Route::new().at("/slow", get(slow)).at("/fast", get(fast)).at("/refuse", post(refuse)).at("/echo", post(echo));
    let (stop, stopped_signal) = oneshot::channel::<()>();
    let args = HttpArgs { header_timeout, idle_timeout };
    let stopped = tokio::spawn(async move {
        serve(
            acceptor,
            app,
            &args,
            async {
                let _ = stopped_signal.await;
            },
            Duration::from_secs(10),
        )
        .await;
    });
    Server { address, stop: Some(stop), stopped }
}

const GET_FAST: &[u8] = b"GET /fast HTTP/1.1\r\nHost: test\r\n\r\n";

#[tokio::test]
async fn a_second_request_head_trickled_on_a_kept_alive_connection_is_cut_at_the_header_deadline() {
    let server = start(Duration::from_secs(1), Duration::from_secs(60)).await;
    let mut connection = TcpStream::connect(server.address).await.expect("connect");
    connection.write_all(GET_FAST).await.expect("send");
    let (head, _) = read_response(&mut connection).await.expect("first request answered");
    assert!(head.starts_with("http/1.1 200"), "{head}");

    // The next request's head, one byte every 200 ms: it never completes in time.
    let started = Instant::now();
    let mut cut = None;
    for &byte in b"GET /fast HTTP/1.1\r\nHost: test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n" {
        if connection.write_all(&[byte]).await.is_err() {
            cut = Some(started.elapsed());
            break;
        }
        if closed_within(&mut connection, Duration::from_millis(200)).await.is_some() {
            cut = Some(started.elapsed());
            break;
        }
    }
    let cut = cut.expect("the trickled head was still being accepted after 14 s");
    assert!(cut >= Duration::from_millis(800) && cut < Duration::from_secs(3), "closed after {cut:?}");
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_after_the_idle_timeout_but_not_while_its_request_runs() {
    let server = start(Duration::from_millis(500), Duration::from_secs(1)).await;
    let mut connection = TcpStream::connect(server.address).await.expect("connect");
    // A request that takes 300 ms is not cut by the 500 ms header deadline either.
    for _ in 0..3 {
        connection.write_all(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n").await.expect("send");
        let (head, body) = read_response(&mut connection).await.expect("answered");
        assert!(head.starts_with("http/1.1 200") && body == "slow", "{head}");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // Idle: closed after the idle timeout, not at the (shorter) header deadline.
    let closed = closed_within(&mut connection, Duration::from_secs(5)).await.expect("closed when idle");
    assert!(closed >= Duration::from_millis(450) && closed < Duration::from_secs(2), "closed after {closed:?}");
}

#[tokio::test]
async fn a_request_refused_before_its_body_was_read_gets_connection_close_and_a_read_one_does_not() {
    let server = start(Duration::from_secs(5), Duration::from_secs(60)).await;
    let mut connection = TcpStream::connect(server.address).await.expect("connect");
    connection.write_all(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\nhello").await.expect("send");
    let (head, body) = read_response(&mut connection).await.expect("answered");
    assert_eq!(body, "hello");
    assert!(!head.contains("connection: close"), "{head}");

    // Only part of the declared body has been sent when the refusal comes.
    connection
        .write_all(b"POST /refuse HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\r\npartial")
        .await
        .expect("send");
    let (head, _) = read_response(&mut connection).await.expect("answered");
    assert!(head.starts_with("http/1.1 401"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(closed_within(&mut connection, Duration::from_secs(5)).await.is_some(), "connection kept open");
}

#[tokio::test]
async fn shutdown_answers_all_100_requests_in_flight_on_kept_alive_connections_then_closes_them() {
    let mut server = start(Duration::from_secs(5), Duration::from_secs(60)).await;
    let mut connections = Vec::new();
    for _ in 0..100 {
        let mut connection = TcpStream::connect(server.address).await.expect("connect");
        connection.write_all(GET_FAST).await.expect("send");
        read_response(&mut connection).await.expect("warm-up answered");
        connections.push(connection);
    }
    // Idle kept-alive connections that send nothing are closed by the shutdown.
    let mut idle = TcpStream::connect(server.address).await.expect("connect");
    idle.write_all(GET_FAST).await.expect("send");
    read_response(&mut idle).await.expect("answered");

    // 50 slow requests being served and 50 fast ones just sent when shutdown begins.
    for (index, connection) in connections.iter_mut().enumerate() {
        let request: &[u8] = if index % 2 == 0 { b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n" } else { GET_FAST };
        connection.write_all(request).await.expect("send");
        if index == 49 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    server.stop.take().expect("running").send(()).expect("server running");
    let answers = futures_util::future::join_all(connections.iter_mut().map(|connection| async move {
        let answer = read_response(connection).await;
        let closed = closed_within(connection, Duration::from_secs(5)).await.is_some();
        (answer, closed)
    }))
    .await;
    let answered = answers
        .iter()
        .filter(|(answer, _)| matches!(answer, Some((head, _)) if head.starts_with("http/1.1 200")))
        .count();
    assert_eq!(answered, 100, "answered {answered} of 100 in-flight requests");
    assert!(answers.iter().all(|(_, closed)| *closed), "a connection stayed open after its last answer");
    // The slow ones were still being served when shutdown began: told so in their answers.
    for (answer, _) in answers.iter().step_by(2) {
        let (head, body) = answer.as_ref().expect("answered");
        assert!(body == "slow" && head.contains("connection: close"), "{head}");
    }
    assert!(closed_within(&mut idle, Duration::from_secs(5)).await.is_some(), "the idle connection stayed open");
    tokio::time::timeout(Duration::from_secs(5), server.stopped).await.expect("server stops").expect("serve task");
    assert!(TcpStream::connect(server.address).await.is_err(), "still accepting after shutdown");
}
