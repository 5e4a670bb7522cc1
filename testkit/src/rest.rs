//! A small client for the REST tests: one user's token against one running API.

use std::time::Duration;

use crate::TestContext;
use parley_shared::ids::UserId;
use serde_json::Value;
use uuid::Uuid;

#[derive(Clone, Debug)]
pub struct User {
    pub id: UserId,
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// The status, the content type and the JSON body (`Null` when there is none).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// Asserts the status, returning the body; the message shows the body on failure.
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.body);
        self.body
    }

    /// Asserts an RFC 7807 problem with this status and code.
    #[track_caller]
    pub fn expect_problem(self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.body);
        assert!(self.content_type.starts_with("application/problem+json"), "content type {}", self.content_type);
        assert_eq!(self.body["status"], status);
        assert_eq!(self.body["code"], code, "problem: {}", self.body);
        self.body
    }
}

/// Environment for an API that must take more writes per user than the default rate limit
/// and conversation quotas allow.
pub fn unlimited_writes() -> Vec<(String, String)> {
    [
        ("PARLEY_WRITE_RATE_PER_SECOND", "100000"),
        ("PARLEY_WRITE_BURST", "100000"),
        ("PARLEY_NEW_CONVERSATIONS_PER_HOUR", "100000"),
        ("PARLEY_NEW_DIRECT_PARTNERS_PER_HOUR", "100000"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect()
}

impl User {
    pub fn new(ctx: &TestContext, api_url: &str, name: &str) -> Self {
        let id = UserId::from_uuid(Uuid::now_v7());
        Self { id, base: api_url.to_owned(), token: Some(ctx.token(id, name)), http: client() }
    }

    /// The same API without any credentials.
    pub fn anonymous(api_url: &str) -> Self {
        Self { id: UserId::from_uuid(Uuid::nil()), base: api_url.to_owned(), token: None, http: client() }
    }

    /// The same user against another API instance.
    pub fn on(mut self, api_url: &str) -> Self {
        api_url.clone_into(&mut self.base);
        self
    }

    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    pub fn uuid(&self) -> Uuid {
        *self.id.as_uuid()
    }

    /// The bearer token this user sends, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.http.post(self.url(path)).json(&body)).await
    }

    pub async fn post_with_key(&self, path: &str, key: &str, body: Value) -> Reply {
        self.send(self.http.post(self.url(path)).header("Idempotency-Key", key).json(&body)).await
    }

    pub async fn post_with_header(&self, path: &str, header: (&str, &str), body: Value) -> Reply {
        self.send(self.http.post(self.url(path)).header(header.0, header.1).json(&body)).await
    }

    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
        self.send(self.http.post(self.url(path)).header("content-type", content_type).body(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.send(self.http.put(self.url(path)).json(&body)).await
    }

    pub async fn put_empty(&self, path: &str) -> Reply {
        self.send(self.http.put(self.url(path))).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.send(self.http.patch(self.url(path)).json(&body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.http.delete(self.url(path))).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, mut request: reqwest::RequestBuilder) -> Reply {
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request reaches the API");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let bytes = response.bytes().await.expect("response body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status, content_type, headers, body }
    }

    /// Creates a group with `others` and returns its id.
    pub async fn group(&self, title: &str, others: &[&User]) -> Uuid {
        let members: Vec<Uuid> = others.iter().map(|user| user.uuid()).collect();
        let body = self
            .post("/v1/conversations", serde_json::json!({ "kind": "group", "title": title, "member_ids": members }))
            .await
            .expect(201);
        body["id"].as_str().expect("id").parse().expect("uuid")
    }

    /// Sends a message and returns it.
    pub async fn say(&self, conversation: Uuid, text: &str) -> Value {
        self.post(&format!("/v1/conversations/{conversation}/messages"), serde_json::json!({ "text": text }))
            .await
            .expect(201)
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("http client")
}
