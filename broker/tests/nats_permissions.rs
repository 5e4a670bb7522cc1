//! Both services on a NATS server that requires authentication, each under exactly the
//! least-privilege permissions of `deploy/nats/`: everything works, the server refused nothing
//! they tried, and neither the broker's credentials nor an anonymous client can forge an event.

use std::time::{Duration, Instant};

use parley_testkit::nats::NatsServer;
use parley_testkit::process::Output;
use parley_testkit::rest::{User, unlimited_writes};
use parley_testkit::ws::WsClient;
use parley_testkit::{AppProcess, Binary, TestContext, wait};
use serde_json::json;

const PERMISSIONS: &str = include_str!("../../deploy/nats/permissions.conf");
const SAMPLE_SERVER: &str = include_str!("../../deploy/nats/nats-server.conf");
const API_PASSWORD: &str = "api-password-0123456789";
const BROKER_PASSWORD: &str = "broker-password-0123456789";
const SERVER_KEY: &str = "server-key-one-0123456789abcdef";

/// The sample's permissions, then `users` (an `authorization { … }` block), with the passwords it
/// refers to defined; the port and JetStream store come from the test harness.
fn server_config(users: &str) -> String {
    let passwords = [("PARLEY_API_NATS_PASSWORD", API_PASSWORD), ("PARLEY_BROKER_NATS_PASSWORD", BROKER_PASSWORD)];
    // nats-server refuses a variable nothing refers to.
    let defined: String = passwords
        .iter()
        .filter(|(name, _)| users.contains(&format!("${name}")))
        .map(|(name, password)| format!("{name}: \"{password}\"\n"))
        .collect();
    format!("{defined}{PERMISSIONS}\n{users}")
}

/// The sample's `authorization { … }` block, as it is.
fn sample_users() -> &'static str {
    let start = SAMPLE_SERVER.find("authorization {").expect("the sample has an authorization block");
    &SAMPLE_SERVER[start..]
}

async fn start_nats(ctx: &TestContext, config: &str) -> NatsServer {
    let port = wait::free_port().expect("free port");
    let output = Output::File(ctx.dir().join("secured-nats.log"));
    // -DV would log every message; violations are logged at the default level.
    NatsServer::start_with_config(&ctx.dir().join("secured-nats"), port, output, config).await.expect("nats-server")
}

fn violations(ctx: &TestContext) -> Vec<String> {
    let log = std::fs::read_to_string(ctx.dir().join("secured-nats.log")).expect("nats log");
    log.lines().filter(|line| line.contains("Violation")).map(str::to_owned).collect()
}

fn ws_url(broker: &AppProcess) -> String {
    format!("{}/ws", broker.url().replace("http://", "ws://"))
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect()
}

#[tokio::test]
async fn both_services_run_under_least_privilege_and_neither_the_broker_nor_an_anonymous_client_can_forge_an_event() {
    let ctx = TestContext::start().await;
    let nats = start_nats(&ctx, &server_config(sample_users())).await;
    let port = nats.port().to_string();
    // The sample's subjects have the default prefix. The API's credentials are in its URL, the
    // broker's in NATS_USER/NATS_PASSWORD.
    let api_env = env(&[
        ("NATS_URL", &format!("nats://parley-api:{API_PASSWORD}@127.0.0.1:{port}")),
        ("PARLEY_NATS_PREFIX", "parley"),
        ("PARLEY_SERVER_API_KEYS", SERVER_KEY),
    ]);
    let api = ctx.spawn(Binary::Api, [unlimited_writes(), api_env].concat()).await;
    let broker_env = env(&[
        ("NATS_URL", &format!("nats://127.0.0.1:{port}")),
        ("NATS_USER", "parley-broker"),
        ("NATS_PASSWORD", BROKER_PASSWORD),
        ("PARLEY_NATS_PREFIX", "parley"),
    ]);
    let broker = ctx.spawn(Binary::Broker, broker_env).await;
    for (name, process) in [("api", &api), ("broker", &broker)] {
        let log = process.log_tail(400);
        assert!(!log.contains(API_PASSWORD) && !log.contains(BROKER_PASSWORD), "{name} logged a password:\n{log}");
    }

    let (alice, bob) = (User::new(&ctx, &api.url(), "alice"), User::new(&ctx, &api.url(), "bob"));
    let group = alice.group("team", &[&bob]).await;
    let mut alice_ws = WsClient::connect(&ws_url(&broker), &ctx.token(alice.id, "alice")).await;
    let mut bob_ws = WsClient::connect(&ws_url(&broker), &ctx.token(bob.id, "bob")).await;

    // Events: API → JetStream → the broker's consumer.
    let sent = bob.say(group, "hello").await;
    let hello = alice_ws.next_event().await;
    assert_eq!(hello["data"]["message_id"], sent["id"]);
    let next_seq = hello["seq"].as_i64().expect("seq") + 1;
    // Typing through the broker and through the API; presence through the bucket.
    bob_ws.send_json(&json!({ "type": "typing", "conversation_id": group, "state": "start" })).await;
    assert_eq!(next_of(&mut alice_ws, "typing").await["actor"], bob.uuid().to_string());
    bob.post(&format!("/v1/conversations/{group}/typing"), json!({})).await.expect(202);
    assert_eq!(next_of(&mut alice_ws, "typing").await["actor"], bob.uuid().to_string());
    presence_becomes(&alice, &bob, "online").await;
    // Channels: a durable and an ephemeral publication, and the subscriber count (scatter-gather).
    for channel in ["public:news", "live:scores"] {
        alice_ws.send_json(&json!({ "type": "subscribe", "channel": channel })).await;
        assert_eq!(next_of(&mut alice_ws, "subscribed").await["channel"], channel);
        let published = reqwest::Client::new()
            .post(format!("{}/v1/channels/{channel}/publications", api.url()))
            .header("X-API-Key", SERVER_KEY)
            .json(&json!({ "data": { "on": channel } }))
            .send()
            .await
            .expect("publish");
        assert_eq!(published.status(), 202);
        assert_eq!(next_of(&mut alice_ws, "publication").await["data"]["on"], channel);
    }
    let stats: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/v1/channels/public:news", api.url()))
        .header("Authorization", format!("ApiKey {SERVER_KEY}"))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!((stats["subscribers"].as_u64(), stats["complete"].as_bool()), (Some(1), Some(true)), "{stats}");
    assert_eq!(violations(&ctx), Vec::<String>::new(), "the services tried something their permissions refuse");

    // An anonymous client is not let in at all.
    let anonymous = async_nats::ConnectOptions::new().connect(nats.url()).await;
    assert!(anonymous.is_err(), "an anonymous client connected");
    // The broker's credentials cannot publish a conversation event, neither on core NATS nor
    // through JetStream.
    let as_broker = async_nats::ConnectOptions::with_user_and_password("parley-broker".into(), BROKER_PASSWORD.into())
        .custom_inbox_prefix("_INBOX.parley-broker")
        .connect(nats.url())
        .await
        .expect("the broker's credentials connect");
    let subject = format!("parley.conv.{group}.message.created");
    let forged = json!({ "id": uuid::Uuid::now_v7(), "type": "message.created", "conversation_id": group,
        "seq": next_seq, "actor": bob.uuid(), "data": { "message_id": uuid::Uuid::now_v7(), "text": "forged" } });
    as_broker.publish(subject.clone(), forged.to_string().into()).await.expect("queued");
    as_broker.flush().await.expect("flushed");
    let jetstream = async_nats::jetstream::new(as_broker.clone());
    let acked = match jetstream.publish(subject.clone(), forged.to_string().into()).await {
        Ok(ack) => tokio::time::timeout(Duration::from_secs(2), ack).await.is_ok_and(|ack| ack.is_ok()),
        Err(_) => false,
    };
    assert!(!acked, "JetStream stored an event published with the broker's credentials");
    let refused = violations(&ctx);
    assert!(
        !refused.is_empty() && refused.iter().all(|line| line.contains(&subject)),
        "the server did not refuse exactly the forged publishes: {refused:?}"
    );
    // Alice's next event is the next real message, with the seq the forgery claimed.
    let real = bob.say(group, "real").await;
    let event = alice_ws.next_event().await;
    assert_eq!((&event["data"]["message_id"], event["seq"].as_i64()), (&real["id"], Some(next_seq)), "{event}");
}

#[tokio::test]
async fn a_token_in_the_url_and_an_nkey_seed_file_authenticate_too() {
    let ctx = TestContext::start().await;
    let broker_key = nkeys::KeyPair::new_user();
    let users = format!(
        "authorization {{\n  users: [\n    {{ user: parley-api, password: $PARLEY_API_NATS_PASSWORD, permissions: $PARLEY_API_PERMISSIONS }}\n    {{ nkey: {}, permissions: $PARLEY_BROKER_PERMISSIONS }}\n  ]\n}}\n",
        broker_key.public_key()
    );
    let nats = start_nats(&ctx, &server_config(&users)).await;
    let seed_file = ctx.dir().join("broker.nk");
    std::fs::write(&seed_file, broker_key.seed().expect("seed")).expect("write the seed");
    let port = nats.port().to_string();
    let api = ctx
        .spawn(
            Binary::Api,
            [
                unlimited_writes(),
                env(&[
                    ("NATS_URL", &format!("nats://127.0.0.1:{port}")),
                    ("NATS_USER", "parley-api"),
                    ("NATS_PASSWORD", API_PASSWORD),
                    ("PARLEY_NATS_PREFIX", "parley"),
                ]),
            ]
            .concat(),
        )
        .await;
    let broker_env = env(&[
        ("NATS_URL", &format!("nats://127.0.0.1:{port}")),
        ("NATS_NKEY", &seed_file.to_string_lossy()),
        ("PARLEY_NATS_PREFIX", "parley"),
    ]);
    let broker = ctx.spawn(Binary::Broker, broker_env).await;
    let (alice, bob) = (User::new(&ctx, &api.url(), "alice"), User::new(&ctx, &api.url(), "bob"));
    let group = alice.group("team", &[&bob]).await;
    let mut alice_ws = WsClient::connect(&ws_url(&broker), &ctx.token(alice.id, "alice")).await;
    let sent = bob.say(group, "over an nkey").await;
    assert_eq!(alice_ws.next_event().await["data"]["message_id"], sent["id"]);
    drop((api, broker, nats));

    // A server that takes one token: the token in the URL is sent, and a wrong one is refused
    // (the API starts but stays not ready).
    let nats = start_nats(&ctx, "authorization { token: \"s3cret-token\" }\n").await;
    let with_token = |token: &str| {
        env(&[("NATS_URL", &format!("nats://{token}@127.0.0.1:{}", nats.port())), ("PARLEY_NATS_PREFIX", "parley")])
    };
    let right = ctx.spawn(Binary::Api, with_token("s3cret-token")).await;
    let wrong = ctx.spawn(Binary::Api, with_token("wrong-token")).await;
    ready_becomes(&right, 200).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    ready_becomes(&wrong, 503).await;
    assert!(!wrong.log_tail(200).contains("wrong-token"), "the token was logged");
}

async fn ready_becomes(process: &AppProcess, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = reqwest::get(format!("{}/ready", process.url())).await.expect("/ready answers").status();
        if answer == status {
            return;
        }
        assert!(Instant::now() < deadline, "/ready stayed {answer}, expected {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The next frame of `kind`, skipping others.
async fn next_of(client: &mut WsClient, kind: &str) -> serde_json::Value {
    loop {
        let frame = client.next_frame().await.unwrap_or_else(|| panic!("a {kind} frame before the timeout"));
        if frame["type"] == kind {
            return frame;
        }
    }
}

async fn presence_becomes(viewer: &User, user: &User, status: &str) {
    let path = format!("/v1/users/{}/presence", user.uuid());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let presence = viewer.get(&path).await.expect(200);
        if presence["status"] == status {
            return;
        }
        assert!(Instant::now() < deadline, "presence stayed {presence}, expected {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files in `dir`:
/// (ca, server cert, server key, client cert, client key).
fn certificates(dir: &std::path::Path) -> [std::path::PathBuf; 5] {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let signed = |names: Vec<String>| {
        let key = KeyPair::generate().expect("key");
        let certificate = CertificateParams::new(names).expect("params").signed_by(&key, &ca, &ca_key).expect("sign");
        (certificate.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = signed(vec!["127.0.0.1".into(), "localhost".into()]);
    let (client_cert, client_key) = signed(vec!["parley-service".into()]);
    let files = ["ca.pem", "server.pem", "server-key.pem", "client.pem", "client-key.pem"].map(|name| dir.join(name));
    for (file, pem) in files.iter().zip([ca.pem(), server_cert, server_key, client_cert, client_key]) {
        std::fs::write(file, pem).expect("write a PEM file");
    }
    files
}

#[tokio::test]
async fn both_services_connect_over_tls_with_a_client_certificate_and_a_client_without_one_is_refused() {
    let ctx = TestContext::start().await;
    let [ca, server_cert, server_key, client_cert, client_key] = certificates(ctx.dir());
    let path = |file: &std::path::PathBuf| file.to_string_lossy().into_owned();
    // The server requires TLS and a client certificate signed by the CA.
    let config = format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n  timeout: 2\n}}\n",
        path(&server_cert),
        path(&server_key),
        path(&ca)
    );
    let nats = start_nats(&ctx, &config).await;
    let tls = env(&[
        ("NATS_URL", &format!("tls://127.0.0.1:{}", nats.port())),
        ("NATS_CA", &path(&ca)),
        ("NATS_CERT", &path(&client_cert)),
        ("NATS_KEY", &path(&client_key)),
    ]);
    let api = ctx.spawn(Binary::Api, [unlimited_writes(), tls.clone()].concat()).await;
    let broker = ctx.spawn(Binary::Broker, tls).await;
    let (alice, bob) = (User::new(&ctx, &api.url(), "alice"), User::new(&ctx, &api.url(), "bob"));
    let group = alice.group("team", &[&bob]).await;
    let mut alice_ws = WsClient::connect(&ws_url(&broker), &ctx.token(alice.id, "alice")).await;
    let sent = bob.say(group, "over TLS").await;
    assert_eq!(alice_ws.next_event().await["data"]["message_id"], sent["id"]);

    // Without a client certificate the server refuses the connection: the API stays not ready.
    let no_certificate = ctx
        .spawn(Binary::Api, env(&[("NATS_URL", &format!("tls://127.0.0.1:{}", nats.port())), ("NATS_CA", &path(&ca))]))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    ready_becomes(&no_certificate, 503).await;
}

/// A NATS JWT (`ed25519-nkey`) with `claims` about `subject`, signed by `issuer`.
fn nats_jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    use base64::Engine;
    let encode = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = json!({
        "jti": uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
        "iat": chrono::Utc::now().timestamp(),
        "iss": issuer.public_key(),
        "sub": subject,
        "name": name,
        "nats": nats,
    });
    let claims = encode(claims.to_string().as_bytes());
    let signature = issuer.sign(format!("{header}.{claims}").as_bytes()).expect("sign");
    format!("{header}.{claims}.{}", encode(&signature))
}

/// A `.creds` file (user JWT and seed) as `nsc` writes them.
fn creds_file(jwt: &str, user: &nkeys::KeyPair) -> String {
    let seed = user.seed().expect("seed");
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

#[tokio::test]
async fn both_services_authenticate_with_a_credentials_file_on_a_server_in_operator_mode() {
    let ctx = TestContext::start().await;
    let operator = nkeys::KeyPair::new_operator();
    let system = nkeys::KeyPair::new_account();
    let account = nkeys::KeyPair::new_account();
    let unlimited = json!({ "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1 });
    let with_jetstream = json!({ "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1 });
    let operator_jwt = nats_jwt(
        &operator,
        &operator.public_key(),
        "parley-test",
        json!({
        "type": "operator", "version": 2, "system_account": system.public_key() }),
    );
    let system_jwt = nats_jwt(
        &operator,
        &system.public_key(),
        "SYS",
        json!({
        "type": "account", "version": 2, "limits": unlimited }),
    );
    let account_jwt = nats_jwt(
        &operator,
        &account.public_key(),
        "PARLEY",
        json!({
        "type": "account", "version": 2, "limits": with_jetstream }),
    );
    let config = format!(
        "operator: \"{operator_jwt}\"\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n  {}: \"{system_jwt}\"\n  {}: \"{account_jwt}\"\n}}\n",
        system.public_key(),
        system.public_key(),
        account.public_key()
    );
    let nats = start_nats(&ctx, &config).await;
    let creds = |name: &str| {
        let user = nkeys::KeyPair::new_user();
        let jwt = nats_jwt(
            &account,
            &user.public_key(),
            name,
            json!({
            "type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1 }),
        );
        let file = ctx.dir().join(format!("{name}.creds"));
        std::fs::write(&file, creds_file(&jwt, &user)).expect("write the creds file");
        file.to_string_lossy().into_owned()
    };
    let with_creds =
        |name: &str| env(&[("NATS_URL", &format!("nats://127.0.0.1:{}", nats.port())), ("NATS_CREDS", &creds(name))]);
    let api = ctx.spawn(Binary::Api, [unlimited_writes(), with_creds("parley-api")].concat()).await;
    let broker = ctx.spawn(Binary::Broker, with_creds("parley-broker")).await;
    let (alice, bob) = (User::new(&ctx, &api.url(), "alice"), User::new(&ctx, &api.url(), "bob"));
    let group = alice.group("team", &[&bob]).await;
    let mut alice_ws = WsClient::connect(&ws_url(&broker), &ctx.token(alice.id, "alice")).await;
    let sent = bob.say(group, "with a creds file").await;
    assert_eq!(alice_ws.next_event().await["data"]["message_id"], sent["id"]);

    // Without credentials the server lets nobody in.
    assert!(async_nats::ConnectOptions::new().connect(nats.url()).await.is_err(), "an anonymous client connected");
}
