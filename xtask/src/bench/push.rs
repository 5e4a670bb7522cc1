//! `cargo xtask bench push`: the push dispatcher's throughput, and what mentions cost a send.
//!
//! 1. Pushes/s: 20,000 notifications, each for one of 2,000 offline users with an Expo target,
//!    are queued at once (written straight into PostgreSQL, as the sends that cause them would);
//!    the release API's dispatcher decides and pushes them to a local Expo-compatible receiver.
//!    Baseline, in the same invocation: a bare sender posting the same 100-message batches to the
//!    same receiver with the same concurrency, doing nothing else — the ceiling of the provider
//!    side. Reported: pushes/s of each and their ratio.
//! 2. Mentions: message POSTs that name the conversation's other member (one notification each)
//!    against POSTs that name nobody, each as a ratio to pgbench running the plain message
//!    transaction in the same invocation (pairs alternate; the median is reported).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hyper::Method;
use poem::web::{Data, Json};
use poem::{EndpointExt, Route, handler, post};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{BenchUser, Stack, http, run_pgbench, token};

const USERS: usize = 2_000;
const NOTIFICATIONS: usize = 20_000;
/// The dispatcher's default `PARLEY_PUSH_CONCURRENCY`, used by the bare sender too.
const CONCURRENCY: usize = 16;
const EXPO_BATCH: usize = 100;
const CLIENTS: usize = 16;

/// Counts the messages it was sent and answers each with an `ok` ticket.
#[handler]
async fn expo(Data(count): Data<&Arc<AtomicU64>>, Json(messages): Json<Vec<Value>>) -> Json<Value> {
    count.fetch_add(messages.len() as u64, Ordering::Relaxed);
    let tickets: Vec<Value> = messages.iter().map(|_| json!({ "status": "ok", "id": "ticket" })).collect();
    Json(json!({ "data": tickets }))
}

pub async fn run(seconds: u64, pairs: usize) -> anyhow::Result<()> {
    let received = Arc::new(AtomicU64::new(0));
    let port = parley_testkit::wait::free_port()?;
    let receiver = Route::new().at("/expo", post(expo)).data(received.clone());
    tokio::spawn(poem::Server::new(poem::listener::TcpListener::bind(format!("127.0.0.1:{port}"))).run(receiver));
    let expo_url = format!("http://127.0.0.1:{port}/expo");
    parley_testkit::wait::until("the receiver to listen", Duration::from_secs(5), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(drop)
    })
    .await?;
    let stack = Stack::start_with(vec![("PARLEY_EXPO_PUSH_URL".into(), expo_url.clone())]).await?;
    let db = sqlx::PgPool::connect(&stack.database_url()).await?;

    let bare = bare_sender(&expo_url, &received).await?;
    received.store(0, Ordering::SeqCst);
    let dispatched = dispatcher(&db, &received).await?;
    eprintln!("bench push: dispatcher {dispatched:.0} pushes/s, bare sender {bare:.0}/s");

    let users = users_with_partners(&stack).await?;
    let mut rows = Vec::with_capacity(pairs);
    for pair in 0..pairs {
        let duration = Duration::from_secs(seconds);
        // Which runs first alternates: the tables grow through the invocation, and a later run
        // would otherwise always be the one paying for it.
        let first = drive(&users, duration, pair % 2 == 1).await?;
        let pgbench = run_pgbench(
            &stack.postgres,
            stack.dir(),
            &users.iter().map(|(user, _)| user.clone()).collect::<Vec<_>>(),
            duration,
        )?;
        let second = drive(&users, duration, pair % 2 == 0).await?;
        let (plain, mentioning) = if pair % 2 == 0 { (first, second) } else { (second, first) };
        eprintln!(
            "bench push: POST {plain:.0}/s, with a mention {mentioning:.0}/s, pgbench {pgbench:.0} tx/s; ratios {:.2} and {:.2}",
            plain / pgbench,
            mentioning / pgbench
        );
        rows.push((plain / pgbench, mentioning / pgbench));
    }
    rows.sort_by(|a, b| (a.1 / a.0).total_cmp(&(b.1 / b.0)));
    let (plain_ratio, mention_ratio) = rows[rows.len() / 2];
    stack.stop().await;

    let report = json!({
        "scenario": "push",
        "notifications": NOTIFICATIONS,
        "dispatcher_pushes_per_s": dispatched,
        "bare_sender_pushes_per_s": bare,
        "post_ratio_to_pgbench": plain_ratio,
        "post_with_mention_ratio_to_pgbench": mention_ratio,
        "all_pairs": rows.iter().map(|(plain, mention)| json!([plain, mention])).collect::<Vec<_>>(),
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("push.json"), serde_json::to_string_pretty(&report)?)?;
    let table = format!(
        "| measure | value |\n|---|---:|\n\
         | dispatcher pushes/s ({NOTIFICATIONS} notifications, Expo batches) | {dispatched:.0} |\n\
         | bare sender pushes/s (same batches, same concurrency) | {bare:.0} |\n\
         | dispatcher ÷ bare | {:.2} |\n\
         | POST ÷ pgbench | {plain_ratio:.2} |\n\
         | POST with a mention ÷ pgbench | {mention_ratio:.2} |\n\
         | with ÷ without mention | {:.2} |\n",
        dispatched / bare,
        mention_ratio / plain_ratio
    );
    std::fs::write(dir.join("push.md"), &table)?;
    println!("{table}\nReport: target/bench/push.json, target/bench/push.md");
    Ok(())
}

/// Posts [`NOTIFICATIONS`] messages in Expo batches, [`CONCURRENCY`] requests at once.
async fn bare_sender(url: &str, received: &AtomicU64) -> anyhow::Result<f64> {
    let http = reqwest::Client::new();
    let batch: Vec<Value> = (0..EXPO_BATCH)
        .map(|n| {
            json!({
                "to": format!("ExponentPushToken[bench-{n}]"), "title": "alice mentioned you", "body": "bench message",
                "data": { "push_id": Uuid::now_v7(), "notification_id": Uuid::now_v7(), "kind": "mention", "data": {} },
                "priority": "default", "sound": "default", "badge": 1,
            })
        })
        .collect();
    let body = Bytes::from(serde_json::to_vec(&batch)?);
    let started = Instant::now();
    let sends = (0..NOTIFICATIONS / EXPO_BATCH).map(|_| {
        let request = http.post(url).header("content-type", "application/json").body(body.clone());
        async move { request.send().await?.error_for_status()?.bytes().await }
    });
    let results: Vec<_> = futures_util::StreamExt::collect(futures_util::StreamExt::buffer_unordered(
        futures_util::stream::iter(sends),
        CONCURRENCY,
    ))
    .await;
    for result in results {
        result?;
    }
    anyhow::ensure!(received.load(Ordering::SeqCst) as usize == NOTIFICATIONS, "the receiver missed pushes");
    Ok(NOTIFICATIONS as f64 / started.elapsed().as_secs_f64())
}

/// Queues [`NOTIFICATIONS`] notifications for [`USERS`] offline users with an Expo target each,
/// and times the dispatcher until the receiver has every push.
async fn dispatcher(db: &sqlx::PgPool, received: &AtomicU64) -> anyhow::Result<f64> {
    let users: Vec<Uuid> = (0..USERS).map(|_| Uuid::now_v7()).collect();
    sqlx::query("insert into users (id, display_name) select unnest($1::uuid[]), 'bench'")
        .bind(&users)
        .execute(db)
        .await?;
    sqlx::query(
        "insert into push_targets (id, user_id, kind, address)
         select gen_random_uuid(), id, 'expo', 'ExponentPushToken[' || id || ']' from unnest($1::uuid[]) as id",
    )
    .bind(&users)
    .execute(db)
    .await?;
    let ids: Vec<Uuid> = (0..NOTIFICATIONS).map(|_| Uuid::now_v7()).collect();
    let owners: Vec<Uuid> = (0..NOTIFICATIONS).map(|n| users[n % USERS]).collect();
    let started = Instant::now();
    sqlx::query(
        "with created as (
             insert into notifications (id, user_id, kind, priority, title, body, data)
             select id, user_id, 'mention', 'normal', 'alice mentioned you', 'bench message', '{}'::jsonb
               from unnest($1::uuid[], $2::uuid[]) as n (id, user_id)
          returning id
         )
         insert into push_queue (notification_id, due_at) select id, now() from created",
    )
    .bind(&ids)
    .bind(&owners)
    .execute(db)
    .await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while (received.load(Ordering::SeqCst) as usize) < NOTIFICATIONS {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the dispatcher pushed {} of {NOTIFICATIONS} in 120 s",
            received.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(NOTIFICATIONS as f64 / started.elapsed().as_secs_f64())
}

/// [`CLIENTS`] users, each in a group of their own with one other member (whom they mention).
async fn users_with_partners(stack: &Stack) -> anyhow::Result<Vec<(BenchUser, Uuid)>> {
    let http = reqwest::Client::new();
    let mut users = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let (id, partner) = (parley_shared::ids::UserId::from_uuid(Uuid::now_v7()), Uuid::now_v7());
        let token = token(id);
        let created: Value = http
            .post(format!("{}/v1/conversations", stack.api_url()))
            .bearer_auth(&token)
            .json(&json!({ "kind": "group", "title": "bench", "member_ids": [partner] }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let conversation = created["id"].as_str().context("conversation id")?.parse()?;
        users.push((BenchUser { id, token, conversation, api: stack.api_addr() }, partner));
    }
    Ok(users)
}

/// Each user posts messages back to back for `duration`, naming their partner when
/// `mention`; returns messages per second.
async fn drive(users: &[(BenchUser, Uuid)], duration: Duration, mention: bool) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(users.len());
    for (user, partner) in users {
        let mut connection = http::Connection::open(user.api, &user.token).await?;
        let path = format!("/v1/conversations/{}/messages", user.conversation);
        let body = if mention {
            Bytes::from(json!({ "text": "bench message", "mentions": [partner] }).to_string())
        } else {
            Bytes::from_static(br#"{"text":"bench message"}"#)
        };
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            while started.elapsed() < duration {
                let status = connection.send(Method::POST, &path, Some(body.clone())).await?;
                anyhow::ensure!(status.is_success(), "a POST answered {status}");
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}
