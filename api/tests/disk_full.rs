//! PostgreSQL with a full disk: writes answer 503 with `Retry-After`, never 500; reads and what
//! was stored before are untouched.
//!
//! The `messages` table is moved to a tablespace on a 1 MiB tmpfs, so that it is what fills up
//! (ENOSPC → 53100 `disk_full`) while the WAL, on the ordinary disk, never does. Mounting needs
//! root (CAP_SYS_ADMIN), as the rest of the fault tests' set-up does.

use std::path::{Path, PathBuf};
use std::process::Command;

use parley_testkit::privilege::RunAs;
use parley_testkit::rest::{User, unlimited_writes};
use parley_testkit::{Binary, TestContext};

/// A small tmpfs, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, owner: Option<RunAs>) -> Self {
        std::fs::create_dir_all(dir).expect("mount point");
        let mut options = String::from("size=1m,mode=0700");
        if let Some(owner) = owner {
            options.push_str(&format!(",uid={},gid={}", owner.uid, owner.gid));
        }
        let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", &options, "tmpfs"]).arg(dir).status();
        assert!(
            mounted.is_ok_and(|status| status.success()),
            "mounting a 1 MiB tmpfs at {} failed: the full-disk test needs root (CAP_SYS_ADMIN); \
             run the tests as root, e.g. in the project's container",
            dir.display()
        );
        Self(dir.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn when_the_disk_is_full_writes_answer_503_never_500_and_reads_still_work() {
    let ctx = TestContext::with_own_services().await;
    let disk = SmallDisk::mount(&ctx.dir().join("small-disk"), RunAs::for_postgres().expect("database account"));
    let api = ctx.spawn(Binary::Api, unlimited_writes()).await;
    let alice = User::new(&ctx, &api.url(), "alice");
    let group = alice.group("full", &[]).await;
    let first = alice.say(group, "stored before the disk filled up").await;

    let pool = ctx.pool().await;
    sqlx::query(&format!("create tablespace small location '{}'", disk.0.display()))
        .execute(&pool)
        .await
        .expect("tablespace on the small disk");
    sqlx::query("alter table messages set tablespace small").execute(&pool).await.expect("move messages");

    // Messages of 3,600 random characters (PostgreSQL cannot compress them) until the disk is
    // full: a few hundred fit in 1 MiB.
    let text = || (0..100).map(|_| uuid::Uuid::new_v4().to_string()).collect::<String>();
    let messages = format!("/v1/conversations/{group}/messages");
    let mut refused = None;
    let mut stored = 1;
    for _ in 0..2_000 {
        let reply = alice.post(&messages, serde_json::json!({ "text": text() })).await;
        if reply.status != 201 {
            refused = Some(reply);
            break;
        }
        stored += 1;
    }
    let refused = refused.expect("the disk never filled up");
    let retry_after = refused.headers.get("retry-after").and_then(|value| value.to_str().ok()).map(str::to_owned);
    refused.expect_problem(503, "unavailable");
    assert_eq!(retry_after.as_deref(), Some("1"));
    // Other writes into the full table answer the same; reads and the earlier message are intact.
    alice.post(&messages, serde_json::json!({ "text": text() })).await.expect_problem(503, "unavailable");
    let page = alice.get(&messages).await.expect(200);
    assert!(!page["items"].as_array().expect("items").is_empty());
    let first_id: uuid::Uuid = first["id"].as_str().expect("id").parse().expect("uuid");
    let (count, first_kept): (i64, bool) =
        sqlx::query_as("select count(*), bool_or(id = $1) from messages where conversation_id = $2")
            .bind(first_id)
            .bind(group)
            .fetch_one(&pool)
            .await
            .expect("count messages");
    assert_eq!((count, first_kept), (stored, true), "the answered messages and only they are stored");
    assert_eq!(reqwest::get(format!("{}/health", api.url())).await.expect("health").status(), 200);

    // Room again (the table moved back): writes succeed.
    sqlx::query("alter table messages set tablespace pg_default").execute(&pool).await.expect("move back");
    alice.say(group, "stored after the disk has room again").await;
}
