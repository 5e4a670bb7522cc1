//! The harness itself: real servers that can be killed and brought back, and isolation between tests.

use std::time::Duration;

use async_nats::connection::State;
use futures_util::StreamExt;
use parley_testkit::{TestContext, wait};

const RECOVERY: Duration = Duration::from_secs(30);

#[tokio::test]
async fn nats_killed_and_restarted_under_a_connected_client_which_reconnects() {
    let mut ctx = TestContext::with_own_services().await;
    let client =
        async_nats::ConnectOptions::new().retry_on_initial_connect().connect(ctx.nats_url()).await.expect("connect");
    let mut subscription = client.subscribe("harness.check").await.expect("subscribe");
    client.flush().await.expect("flush");

    ctx.nats().kill();
    wait::until("the client to notice NATS is gone", RECOVERY, || async {
        (client.connection_state() != State::Connected).then_some(())
    })
    .await
    .expect("disconnect noticed");

    ctx.nats().start_again().await.expect("restart nats-server");
    wait::until("the client to reconnect", RECOVERY, || async {
        (client.connection_state() == State::Connected).then_some(())
    })
    .await
    .expect("reconnected");

    // The subscription made before the crash is restored on the new connection.
    client.publish("harness.check", "after restart".into()).await.expect("publish");
    let message = tokio::time::timeout(RECOVERY, subscription.next())
        .await
        .expect("message within the timeout")
        .expect("subscription still open");
    assert_eq!(message.payload.as_ref(), b"after restart");
}

#[tokio::test]
async fn postgres_killed_and_restarted_and_the_pool_recovers() {
    let mut ctx = TestContext::with_own_services().await;
    let pool = ctx.pool().await;
    let one: i32 = sqlx::query_scalar("select 1").fetch_one(&pool).await.expect("query before the crash");
    assert_eq!(one, 1);

    ctx.postgres().kill();
    let during = tokio::time::timeout(RECOVERY, sqlx::query("select 1").execute(&pool)).await.expect("fails fast");
    assert!(during.is_err(), "a query must fail while PostgreSQL is down");

    ctx.postgres().start_again().await.expect("restart PostgreSQL");
    wait::until("the pool to serve queries again", RECOVERY, || async {
        sqlx::query_scalar::<_, i32>("select 1").fetch_one(&pool).await.ok()
    })
    .await
    .expect("pool recovered");
}

#[tokio::test]
async fn postgres_graceful_restart_keeps_committed_data() {
    let mut ctx = TestContext::with_own_services().await;
    let pool = ctx.pool().await;
    let id = uuid::Uuid::new_v4();
    sqlx::query("insert into users (id, display_name) values ($1, 'kept')")
        .bind(id)
        .execute(&pool)
        .await
        .expect("insert");

    ctx.postgres().restart().await.expect("restart");
    let name: String = wait::until("the row after restart", RECOVERY, || async {
        sqlx::query_scalar("select display_name from users where id = $1").bind(id).fetch_one(&pool).await.ok()
    })
    .await
    .expect("row survives");
    assert_eq!(name, "kept");
}

#[tokio::test]
async fn each_test_gets_its_own_migrated_database_and_nats_server() {
    let first = TestContext::start().await;
    let second = TestContext::start().await;
    assert_ne!(first.database_url(), second.database_url());
    if std::env::var_os("TEST_NATS_URL").is_none() {
        assert_ne!(first.nats_url(), second.nats_url());
    }

    let (a, b) = (first.pool().await, second.pool().await);
    sqlx::query("insert into users (id) values ($1)").bind(uuid::Uuid::new_v4()).execute(&a).await.expect("insert");
    let count = |pool| async move {
        sqlx::query_scalar::<_, i64>("select count(*) from users").fetch_one(&pool).await.expect("count")
    };
    assert_eq!(count(a).await, 1);
    assert_eq!(count(b).await, 0, "the migrated schema is there, and nothing of the other test");
}
