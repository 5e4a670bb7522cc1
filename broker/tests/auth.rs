//! Who may open a connection, how the token may travel, and what happens when it expires.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Stack, env};
use parley_shared::auth::{Claims, issue_hs256};
use parley_testkit::TEST_JWT_SECRET;
use parley_testkit::ws::{self, Ended, WsClient};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Error as WsError};

const AUDIENCE: &str = "parley-test";

fn claims(user: &parley_testkit::rest::User, ttl: Duration) -> Claims {
    let mut claims = Claims::for_user(user.id, Some("bob".into()), ttl);
    claims.aud = Some(json!(AUDIENCE));
    claims
}

/// The HTTP status the handshake was refused with.
async fn refused_status(request: tungstenite::handshake::client::Request) -> u16 {
    match ws::open(request).await {
        Err(WsError::Http(response)) => {
            let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok());
            assert_eq!(content_type, Some("application/problem+json"));
            if response.status() == 401 {
                let problem: serde_json::Value =
                    serde_json::from_slice(response.body().as_deref().unwrap_or_default()).expect("problem JSON");
                let code = problem["code"].as_str().unwrap_or_default();
                // `unauthorized` is the API's code for 401 too.
                assert!(["unauthorized", "query_token_disabled"].contains(&code), "{problem}");
            }
            response.status().as_u16()
        }
        Ok(_) => panic!("the handshake was accepted"),
        Err(other) => panic!("unexpected failure {other}"),
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_at_the_handshake_with_401() {
    let stack = Stack::start_with(env(&[("PARLEY_JWT_AUDIENCE", AUDIENCE)])).await;
    let bob = stack.user("bob");
    let hour = Duration::from_secs(3600);
    let mut expired = claims(&bob, hour);
    expired.exp -= 2 * 3600;
    let mut wrong_audience = claims(&bob, hour);
    wrong_audience.aud = Some(json!("someone-else"));
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(&bob, hour)).expect("claims"));
    let cases = [
        ("expired", issue_hs256(TEST_JWT_SECRET, &expired)),
        ("wrongly signed", issue_hs256("another-secret", &claims(&bob, hour))),
        ("alg none", format!("{}.{payload}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#))),
        ("wrong audience", issue_hs256(TEST_JWT_SECRET, &wrong_audience)),
        ("garbage", "not-a-jwt".to_owned()),
    ];
    for (case, token) in &cases {
        let status = refused_status(ws::request_with_token(&stack.ws_url(), token)).await;
        assert_eq!(status, 401, "{case} via Authorization");
        let mut request = stack.ws_url().into_client_request().expect("request");
        let protocols = HeaderValue::from_str(&format!("parley.v1, parley.bearer.{token}")).expect("header");
        request.headers_mut().insert("sec-websocket-protocol", protocols);
        assert_eq!(refused_status(request).await, 401, "{case} via subprotocol");
    }
    let mut empty_bearer = stack.ws_url().into_client_request().expect("request");
    empty_bearer.headers_mut().insert("authorization", HeaderValue::from_static("Bearer "));
    assert_eq!(refused_status(empty_bearer).await, 401, "empty bearer");
    let mut two_headers = ws::request_with_token(&stack.ws_url(), &issue_hs256(TEST_JWT_SECRET, &claims(&bob, hour)));
    two_headers.headers_mut().append("authorization", HeaderValue::from_static("Bearer garbage"));
    assert_eq!(refused_status(two_headers).await, 401, "two Authorization headers");

    let good = issue_hs256(TEST_JWT_SECRET, &claims(&bob, hour));
    let query = format!("{}?access_token={good}", stack.ws_url());
    assert_eq!(refused_status(query.into_client_request().expect("request")).await, 401, "query token is off");
    let client = WsClient::connect(&stack.ws_url(), &good).await;
    assert_eq!(client.hello["user_id"], bob.uuid().to_string());
}

#[tokio::test]
async fn without_a_token_in_the_handshake_the_first_frame_must_be_a_valid_auth_frame() {
    let stack = Stack::start_with(env(&[("PARLEY_BROKER_AUTH_TIMEOUT", "1s")])).await;
    let bob = stack.user("bob");
    let bare = || stack.ws_url().into_client_request().expect("request");

    let mut silent = ws::open(bare()).await.expect("upgrade without a token");
    assert_eq!(ws::ended(&mut silent).await, Ended::Closed { code: 4101, reason: "auth_timeout".into() });

    let mut wrong = WsClientRaw(ws::open(bare()).await.expect("upgrade"));
    wrong.send(r#"{"type":"auth","token":"not-a-jwt"}"#).await;
    assert_eq!(ws::ended(&mut wrong.0).await, Ended::Closed { code: 4100, reason: "bad_token".into() });

    let mut not_auth = WsClientRaw(ws::open(bare()).await.expect("upgrade"));
    not_auth.send(r#"{"type":"ping"}"#).await;
    assert_eq!(ws::ended(&mut not_auth.0).await, Ended::Closed { code: 4100, reason: "bad_token".into() });

    let mut good = WsClientRaw(ws::open(bare()).await.expect("upgrade"));
    good.send(&json!({ "type": "auth", "token": stack.ctx.token(bob.id, "bob") }).to_string()).await;
    let client = WsClient::after_handshake(good.0).await;
    assert_eq!(client.hello["user_id"], bob.uuid().to_string());
}

#[tokio::test]
async fn browsers_authenticate_with_the_subprotocol_and_foreign_origins_are_refused() {
    let stack =
        Stack::start_with(env(&[("PARLEY_BROKER_ALLOWED_ORIGINS", "https://app.example,https://admin.example")])).await;
    let bob = stack.user("bob");
    let token = stack.ctx.token(bob.id, "bob");
    let browser = |origin: &'static str| {
        let mut request = stack.ws_url().into_client_request().expect("request");
        let headers = request.headers_mut();
        headers.insert("origin", HeaderValue::from_static(origin));
        headers.insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(&format!("parley.v1, parley.bearer.{token}")).expect("header"),
        );
        request
    };
    let (stream, response) =
        tokio_tungstenite::connect_async(browser("https://admin.example")).await.expect("allowed origin");
    assert_eq!(response.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()), Some("parley.v1"));
    let client = WsClient::after_handshake(stream).await;
    assert_eq!(client.hello["user_id"], bob.uuid().to_string());
    assert_eq!(refused_status(browser("https://evil.example")).await, 403);
}

#[tokio::test]
async fn a_token_that_expires_on_a_live_connection_closes_it_unless_an_auth_frame_refreshed_it() {
    let stack = Stack::start().await;
    let (bob, carol) = (stack.user("bob"), stack.user("carol"));
    let short = |user: &parley_testkit::rest::User| {
        issue_hs256(TEST_JWT_SECRET, &Claims::for_user(user.id, None, Duration::from_secs(3)))
    };
    let mut lapsing = WsClient::connect(&stack.ws_url(), &short(&bob)).await;
    let mut refreshed = WsClient::connect(&stack.ws_url(), &short(&bob)).await;
    let mut hijacked = WsClient::connect(&stack.ws_url(), &short(&bob)).await;

    refreshed.send_json(&json!({ "type": "auth", "token": stack.ctx.token(bob.id, "bob") })).await;
    let ack = refreshed.next_frame().await.expect("authenticated frame");
    assert_eq!(ack["type"], "authenticated", "{ack}");
    hijacked.send_json(&json!({ "type": "auth", "token": stack.ctx.token(carol.id, "carol") })).await;
    assert_eq!(hijacked.ended().await, Ended::Closed { code: 4100, reason: "bad_token".into() });

    assert_eq!(lapsing.ended().await, Ended::Closed { code: 4001, reason: "token_expired".into() });
    refreshed.send_json(&json!({ "type": "ping" })).await;
    assert_eq!(refreshed.next_frame().await.expect("pong")["type"], "pong");
}

#[tokio::test]
async fn a_query_token_is_accepted_only_when_enabled_and_never_written_to_the_log() {
    let mut stack =
        Stack::start_with(env(&[("PARLEY_BROKER_ALLOW_QUERY_TOKEN", "true"), ("PARLEY_LOG", "trace")])).await;
    let bob = stack.user("bob");
    let token = stack.ctx.token(bob.id, "bob");
    let url = format!("{}?access_token={token}", stack.ws_url());
    let stream = ws::open(url.into_client_request().expect("request")).await.expect("query token accepted");
    let client = WsClient::after_handshake(stream).await;
    assert_eq!(client.hello["user_id"], bob.uuid().to_string());
    drop(client);
    stack.broker.terminate().await.expect("broker stops");
    let log = stack.broker.log_tail(100_000);
    let signature = token.rsplit('.').next().expect("signature");
    assert!(!log.contains(signature), "the token reached the broker's log");
}

/// A connection before `hello`, for sending the first frame by hand.
struct WsClientRaw(ws::Stream);

impl WsClientRaw {
    async fn send(&mut self, text: &str) {
        use futures_util::SinkExt;
        self.0.send(tungstenite::Message::text(text)).await.expect("send");
    }
}

#[tokio::test]
async fn an_address_sending_bad_tokens_gets_429_once_its_burst_is_spent_and_good_tokens_still_connect_later() {
    let limits = [("PARLEY_UNAUTHENTICATED_RATE_PER_SECOND", "1"), ("PARLEY_UNAUTHENTICATED_BURST", "4")];
    let stack = Stack::start_with(env(&limits)).await;
    let mut statuses = Vec::new();
    for _ in 0..12 {
        match ws::open(ws::request_with_token(&stack.ws_url(), "not-a-jwt")).await {
            Err(WsError::Http(response)) => {
                if response.status() == 429 {
                    assert!(response.headers().contains_key("retry-after"), "{:?}", response.headers());
                    let problem: serde_json::Value =
                        serde_json::from_slice(response.body().as_deref().unwrap_or_default()).expect("problem");
                    assert_eq!(problem["code"], "rate_limited", "{problem}");
                }
                statuses.push(response.status().as_u16());
            }
            other => panic!("a bad token was not refused: {:?}", other.map(|_| ())),
        }
    }
    assert_eq!(&statuses[..4], [401; 4], "{statuses:?}");
    assert!(statuses[4..].iter().filter(|&&status| status == 429).count() >= 7, "{statuses:?}");
    // Once a token has refilled, a valid one connects.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let bob = stack.user("bob");
    let client = stack.connect(&bob, "bob").await;
    assert_eq!(client.hello["user_id"], bob.uuid().to_string());
}
