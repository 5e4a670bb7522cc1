//! What a person or a browser page meets first, over real HTTP against the real binary: `GET /`
//! and CORS (a page on an allowed origin, on any other origin, and a same-origin page such as
//! Swagger UI).

use parley_shared::ids::UserId;
use parley_testkit::{Binary, TestContext};
use reqwest::{Method, StatusCode};

const APP: &str = "https://app.example";

#[tokio::test]
async fn allowed_origins_get_cors_headers_on_preflights_answers_and_errors_and_others_none() {
    let ctx = TestContext::start().await;
    let origins = ("PARLEY_API_ALLOWED_ORIGINS".to_owned(), format!("{APP}, http://localhost:5173"));
    let api = ctx.spawn(Binary::Api, vec![origins]).await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/conversations", api.url());

    let preflight = http
        .request(Method::OPTIONS, &url)
        .header("origin", APP)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type, idempotency-key")
        .send()
        .await
        .expect("preflight");
    assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
    let headers = preflight.headers();
    assert_eq!(headers["access-control-allow-origin"], APP);
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        assert!(headers["access-control-allow-methods"].to_str().unwrap_or("").contains(method), "{headers:?}");
    }
    let allowed_headers = headers["access-control-allow-headers"].to_str().unwrap_or("").to_ascii_lowercase();
    for header in ["authorization", "content-type", "idempotency-key", "traceparent"] {
        assert!(allowed_headers.contains(header), "{allowed_headers}");
    }
    assert!(headers.get_all("vary").iter().any(|vary| vary == "Origin"));

    let token = ctx.token(UserId::from_uuid(uuid::Uuid::now_v7()), "alice");
    let listed = http.get(&url).header("origin", APP).bearer_auth(&token).send().await.expect("GET");
    assert_eq!(listed.status(), StatusCode::OK);
    assert_eq!(listed.headers()["access-control-allow-origin"], APP);
    assert!(listed.headers()["access-control-expose-headers"].to_str().unwrap_or("").contains("Retry-After"));
    // Errors too: a page must be able to read a 401's problem.
    let refused = http.get(&url).header("origin", APP).send().await.expect("GET without token");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(refused.headers()["access-control-allow-origin"], APP);

    // Any other origin: answered as before, without CORS headers (the browser withholds it).
    let other = http.get(&url).header("origin", "https://evil.example").bearer_auth(&token).send().await.expect("GET");
    assert_eq!(other.status(), StatusCode::OK, "a same-origin page (Swagger UI at /docs) sends Origin too");
    assert!(other.headers().get("access-control-allow-origin").is_none());
    let other_preflight = http
        .request(Method::OPTIONS, &url)
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("preflight");
    assert!(other_preflight.headers().get("access-control-allow-origin").is_none());
    assert_ne!(other_preflight.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn without_allowed_origins_no_response_carries_cors_headers() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let token = ctx.token(UserId::from_uuid(uuid::Uuid::now_v7()), "alice");
    let listed = reqwest::Client::new()
        .get(format!("{}/v1/conversations", api.url()))
        .header("origin", APP)
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET");
    assert_eq!(listed.status(), StatusCode::OK);
    assert!(listed.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn the_root_redirects_to_the_docs_and_a_missing_token_is_unauthorized() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let root = http.get(format!("{}/", api.url())).send().await.expect("GET /");
    assert_eq!(root.status(), StatusCode::SEE_OTHER);
    assert_eq!(root.headers()["location"], "/docs");
    let docs = http.get(format!("{}/docs", api.url())).send().await.expect("GET /docs");
    assert_eq!(docs.status(), StatusCode::OK);

    let refused = http.get(format!("{}/v1/me", api.url())).send().await.expect("GET /v1/me");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let problem: serde_json::Value = refused.json().await.expect("problem+json");
    // The broker's handshake answers the same code (its auth tests check it).
    assert_eq!(problem["code"], "unauthorized");
}

#[tokio::test]
async fn the_served_document_is_the_committed_one_and_every_request_example_is_accepted() {
    const SERVER_KEY: &str = "web-test-server-key-0123456789";
    let ctx = TestContext::start().await;
    let api = ctx.spawn(Binary::Api, vec![("PARLEY_SERVER_API_KEYS".into(), SERVER_KEY.into())]).await;
    let served: serde_json::Value =
        reqwest::get(format!("{}/openapi.json", api.url())).await.expect("spec").json().await.expect("JSON");
    let committed: serde_json::Value =
        serde_json::from_str(&parley_api::openapi_json()).expect("the committed document is JSON");
    assert_eq!(served, committed);
    let docs = reqwest::get(format!("{}/docs", api.url())).await.expect("docs").text().await.expect("html");
    assert!(docs.contains("Weekend trip"), "Swagger UI shows the document with the example");

    // Every request body's example (what Swagger UI prefills) is accepted, in a group of the
    // caller's with one message of theirs (seq 2) for the paths that name them.
    let alice = parley_testkit::rest::User::new(&ctx, &api.url(), "Alice");
    // Backends' routes take the server key instead.
    let backend = parley_testkit::rest::User::anonymous(&api.url());
    let group = alice.group("examples", &[]).await;
    let message = alice.say(group, "first").await;
    let message_id = message["id"].as_str().expect("id");
    let mut sent = Vec::new();
    for (path, operations) in served["paths"].as_object().expect("paths") {
        for (method, operation) in operations.as_object().expect("operations") {
            let Some(reference) =
                operation["requestBody"]["content"]["application/json; charset=utf-8"]["schema"]["$ref"].as_str()
            else {
                continue;
            };
            let schema = reference.trim_start_matches("#/components/schemas/");
            let example = served["components"]["schemas"][schema]["example"].clone();
            assert!(example.is_object(), "{method} {path}: {schema} has no example");
            let path = path
                .replace("{id}", &group.to_string())
                .replace("{message_id}", message_id)
                .replace("{channel}", "public:bounty.b-42");
            let for_backends = path.starts_with("/v1/channels/")
                || path == "/v1/publications"
                || (path.starts_with("/v1/users/") && path.ends_with("/notifications"));
            let reply = match method.as_str() {
                "post" if for_backends => {
                    backend.post_with_header(&path, ("X-API-Key", SERVER_KEY), example.clone()).await
                }
                "post" => alice.post(&path, example.clone()).await,
                "patch" => alice.patch(&path, example.clone()).await,
                "put" => alice.put(&path, example.clone()).await,
                other => panic!("{other} {path} has a body: send it here"),
            };
            assert!(
                (200..300).contains(&reply.status),
                "{method} {path} with {example}: {} {}",
                reply.status,
                reply.body
            );
            sent.push(format!("{method} {path}"));
        }
    }
    assert!(sent.len() >= 8, "{sent:?}");
}

/// Statuses of `count` requests for `/v1/me` with a bad token, as if forwarded for `client`.
async fn bad_token_statuses(http: &reqwest::Client, api: &str, client: &str, count: usize) -> Vec<u16> {
    let mut statuses = Vec::with_capacity(count);
    for _ in 0..count {
        let response = http
            .get(format!("{api}/v1/me"))
            .bearer_auth("not.a.token")
            .header("x-forwarded-for", format!("6.6.6.6, {client}"))
            .send()
            .await
            .expect("request");
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(response.headers().contains_key("retry-after"), "{:?}", response.headers());
            let problem: serde_json::Value = response.json().await.expect("problem");
            assert_eq!(problem["code"], "rate_limited", "{problem}");
            statuses.push(429);
        } else {
            statuses.push(response.status().as_u16());
        }
    }
    statuses
}

#[tokio::test]
async fn one_address_failing_authentication_is_slowed_to_its_rate_and_others_are_not() {
    let ctx = TestContext::start().await;
    let limits = [("PARLEY_UNAUTHENTICATED_RATE_PER_SECOND", "1"), ("PARLEY_UNAUTHENTICATED_BURST", "5")];
    let env = |trusted: &str| {
        let mut env: Vec<(String, String)> = limits.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        env.push(("PARLEY_TRUSTED_PROXIES".into(), trusted.into()));
        env
    };
    // Behind a trusted proxy (the test itself, on 127.0.0.1): the forwarded client counts.
    let api = ctx.spawn(Binary::Api, env("127.0.0.1, ::1")).await;
    let http = reqwest::Client::new();
    let statuses = bad_token_statuses(&http, &api.url(), "203.0.113.9", 20).await;
    assert_eq!(&statuses[..5], [401; 5], "{statuses:?}");
    assert!(statuses[5..].iter().filter(|&&status| status == 429).count() >= 13, "{statuses:?}");
    // Another client behind the same proxy is not affected, and neither is a valid token's
    // request once the address's bucket refilled.
    assert_eq!(bad_token_statuses(&http, &api.url(), "198.51.100.1", 3).await, [401; 3]);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let token = ctx.token(UserId::from_uuid(uuid::Uuid::now_v7()), "alice");
    let me = http.get(format!("{}/v1/me", api.url())).bearer_auth(&token).header("x-forwarded-for", "203.0.113.9");
    assert_eq!(me.send().await.expect("GET").status(), StatusCode::OK);

    // Without trusted proxies the header is the client's to forge, so it is ignored: changing
    // it does not escape the limit.
    let direct = ctx.spawn(Binary::Api, env("")).await;
    let mut statuses = Vec::new();
    for n in 0..12 {
        statuses.extend(bad_token_statuses(&http, &direct.url(), &format!("198.51.100.{n}"), 1).await);
    }
    assert!(statuses.iter().filter(|&&status| status == 429).count() >= 5, "{statuses:?}");
}
