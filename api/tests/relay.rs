//! The outbox relay under events NATS cannot carry and under a NATS that stops answering: the
//! first are refused when written, the second is logged, counted and outlived.

mod common;

use std::time::Duration;

use common::User;
use futures_util::StreamExt;
use parley_testkit::nats::NatsServer;
use parley_testkit::process::Output;
use parley_testkit::{Binary, TestContext, wait};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// A value of the API's `/metrics`, once `accept` holds for it.
async fn metric_until(api_url: &str, name: &str, what: &str, accept: impl Fn(f64) -> bool) -> f64 {
    wait::until(what, Duration::from_secs(20), || async {
        let text = reqwest::get(format!("{api_url}/metrics")).await.ok()?.text().await.ok()?;
        let value: f64 = text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())?;
        accept(value).then_some(value)
    })
    .await
    .unwrap_or_else(|error| panic!("{error}"))
}

async fn event_count(db: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from events").fetch_one(db).await.expect("count events")
}

#[tokio::test]
async fn an_event_larger_than_nats_carries_is_refused_when_written_and_nothing_is_stored() {
    let ctx = TestContext::start().await;
    let nats_port = wait::free_port().expect("port");
    let output = Output::File(ctx.dir().join("small-nats.log"));
    let nats = NatsServer::start_with_config(&ctx.dir().join("small-nats"), nats_port, output, "max_payload: 8192\n")
        .await
        .unwrap_or_else(|error| panic!("{error:#}"));
    let api = ctx.spawn(Binary::Api, vec![("NATS_URL".into(), nats.url())]).await;
    wait::until_http_status(&format!("{}/ready", api.url()), 200, Duration::from_secs(20)).await.expect("ready");
    let db = ctx.pool().await;
    let alice = User::new(&ctx, &api.url(), "Alice");
    let bob = User::new(&ctx, &api.url(), "Bob");
    let group = alice.group("small", &[&bob]).await;
    let stored = event_count(&db).await;

    // 300 members are about 11 KB of ids in `conversation.created`.
    let many: Vec<Uuid> = (0..300).map(|_| Uuid::now_v7()).collect();
    let problem = alice
        .post("/v1/conversations", json!({ "kind": "group", "title": "too big", "member_ids": many }))
        .await
        .expect_problem(413, "payload_too_large");
    assert_eq!(problem["field"], "member_ids", "{problem}");

    // 3,000 three-byte characters: within the API's character limit, over NATS' 8 KiB.
    let long = "€".repeat(3000);
    let messages = format!("/v1/conversations/{group}/messages");
    let problem = alice.post(&messages, json!({ "text": long })).await.expect_problem(413, "payload_too_large");
    assert_eq!(problem["field"], "text", "{problem}");
    let sent = alice.say(group, "fits").await;
    let edit = format!("{messages}/{}", sent["id"].as_str().expect("id"));
    let problem = alice.patch(&edit, json!({ "text": long })).await.expect_problem(413, "payload_too_large");
    assert_eq!(problem["field"], "text", "{problem}");

    assert_eq!(event_count(&db).await, stored + 1, "only the message that fits was recorded");
    // Everything recorded is published: nothing stuck behind a refused event.
    metric_until(&api.url(), "parley_outbox_published_events_total", "every event published", |published| {
        published == (stored + 1) as f64
    })
    .await;
    metric_until(&api.url(), "parley_outbox_unpublishable_events_total", "no event skipped", |skipped| skipped == 0.0)
        .await;
}

#[tokio::test]
async fn a_stalled_nats_is_logged_with_the_event_counted_and_in_the_lag_until_it_resumes() {
    let mut ctx = TestContext::with_own_services().await;
    let env =
        vec![("PARLEY_PUBLISH_TIMEOUT".into(), "1s".into()), ("PARLEY_OUTBOX_POLL_INTERVAL".into(), "200ms".into())];
    let api = ctx.spawn(Binary::Api, env).await;
    let db = ctx.pool().await;
    let alice = User::new(&ctx, &api.url(), "Alice");
    let bob = User::new(&ctx, &api.url(), "Bob");
    let group = alice.group("stall", &[&bob]).await;
    metric_until(&api.url(), "parley_outbox_published_events_total", "the group's event published", |n| n >= 1.0).await;

    ctx.nats().pause();
    let message = alice.say(group, "while NATS is frozen").await;
    let event: Uuid = sqlx::query_scalar("select id from events where conversation_id = $1 and seq = $2")
        .bind(group)
        .bind(message["seq"].as_i64().expect("seq"))
        .fetch_one(&db)
        .await
        .expect("the message's event");
    metric_until(&api.url(), "parley_outbox_stalls_total", "a stall to be counted", |stalls| stalls >= 1.0).await;
    metric_until(&api.url(), "parley_outbox_lag_seconds", "the lag to show the stuck event", |lag| lag > 0.5).await;
    let warned = |log: &str| {
        log.lines().any(|line| {
            line.contains("WARN")
                && line.contains("made no progress")
                && line.contains(&event.to_string())
                && line.contains(&group.to_string())
        })
    };
    assert!(warned(&api.log_tail(100_000)), "no warning naming the event and conversation");

    ctx.nats().resume();
    metric_until(&api.url(), "parley_outbox_lag_seconds", "the lag to clear", |lag| lag == 0.0).await;
    let published: bool = sqlx::query_scalar("select published_at is not null from events where id = $1")
        .bind(event)
        .fetch_one(&db)
        .await
        .expect("read the event");
    assert!(published, "the stuck event was published after NATS resumed");
}

/// Waits until the message event with `text` is published, skipping other events (the
/// group's creation).
async fn published(events: &mut async_nats::Subscriber, text: &str, within: Duration) {
    let until = tokio::time::Instant::now() + within;
    loop {
        let next = tokio::time::timeout_at(until, events.next()).await;
        let message = next.unwrap_or_else(|_| panic!("{text:?} not published within {within:?}")).expect("event");
        let event: serde_json::Value = serde_json::from_slice(&message.payload).expect("event JSON");
        if event["data"]["body"] == text {
            return;
        }
    }
}

/// Which member of the cluster leads the events stream, asked of `server`.
async fn stream_leader(server: &str, stream: &str) -> Option<String> {
    let client = async_nats::connect(server).await.ok()?;
    let mut stream = async_nats::jetstream::new(client).get_stream(stream).await.ok()?;
    stream.info().await.ok()?.cluster.as_ref()?.leader.clone()
}

#[tokio::test]
async fn publishing_resumes_within_ten_seconds_when_the_relays_nats_node_freezes() {
    let ctx = TestContext::start().await;
    let logs = ctx.dir().to_path_buf();
    let cluster = parley_testkit::nats::NatsCluster::start(&ctx.dir().join("cluster"), 3, |n| {
        Output::File(logs.join(format!("nats-cluster-{n}.log")))
    })
    .await
    .expect("3-node NATS cluster");
    // The API knows only node 0 and learns the others from it, so node 0 is the one it uses.
    let frozen = &cluster.servers[0];
    let env = vec![("NATS_URL".into(), frozen.url()), ("PARLEY_STREAM_REPLICAS".into(), "3".into())];
    let api = ctx.spawn(Binary::Api, [common::unlimited_writes(), env].concat()).await;
    let alice = User::new(&ctx, &api.url(), "Alice");
    let bob = User::new(&ctx, &api.url(), "Bob");
    let group = alice.group("freeze", &[&bob]).await;
    let reader = async_nats::connect(cluster.servers[1].url()).await.expect("a reader on node 1");
    let subject = format!("{}.conv.{group}.>", ctx.subjects().prefix());
    let mut events = reader.subscribe(subject).await.expect("subscribe");
    reader.flush().await.expect("flush");
    alice.say(group, "before").await;
    published(&mut events, "before", Duration::from_secs(10)).await;
    let leader = stream_leader(&cluster.servers[1].url(), &ctx.subjects().stream_name()).await;

    frozen.pause();
    let frozen_at = std::time::Instant::now();
    alice.say(group, "while node 0 is frozen").await;
    published(&mut events, "while node 0 is frozen", Duration::from_secs(30)).await;
    let took = frozen_at.elapsed();
    frozen.resume();
    assert!(
        took <= Duration::from_secs(10),
        "published {took:?} after the relay's node froze (stream leader before: {leader:?}, frozen: parley-{})",
        frozen.port()
    );
    eprintln!(
        "published {took:?} after the freeze; stream leader was {leader:?}, frozen node parley-{}",
        frozen.port()
    );
}

#[tokio::test]
async fn when_the_relay_holder_freezes_another_instance_publishes_within_ten_seconds_and_the_holder_steps_down() {
    let ctx = TestContext::start().await;
    let first = ctx.spawn_api().await;
    metric_until(&first.url(), "parley_outbox_leader", "the first instance to lead", |leader| leader == 1.0).await;
    let second = ctx.spawn_api().await;
    metric_until(&second.url(), "parley_outbox_leader", "the second instance to wait", |leader| leader == 0.0).await;
    let alice = User::new(&ctx, &second.url(), "Alice");
    let bob = User::new(&ctx, &second.url(), "Bob");
    let group = alice.group("lease", &[&bob]).await;
    let nats = async_nats::connect(ctx.nats_url()).await.expect("NATS");
    let mut events = nats.subscribe(format!("{}.conv.{group}.>", ctx.subjects().prefix())).await.expect("subscribe");
    nats.flush().await.expect("flush");

    first.pause();
    let frozen_at = std::time::Instant::now();
    alice.say(group, "while the holder is frozen").await;
    published(&mut events, "while the holder is frozen", Duration::from_secs(30)).await;
    let took = frozen_at.elapsed();
    assert!(took <= Duration::from_secs(10), "published {took:?} after the holder froze");
    eprintln!("published {took:?} after the relay holder froze");

    // Woken up, the old holder finds its lease gone and waits; the new one keeps publishing.
    first.resume();
    metric_until(&first.url(), "parley_outbox_leader", "the old holder to step down", |leader| leader == 0.0).await;
    metric_until(&second.url(), "parley_outbox_leader", "the new holder to lead", |leader| leader == 1.0).await;
    alice.say(group, "after").await;
    published(&mut events, "after", Duration::from_secs(10)).await;
}
