//! `/v1/me` and `/v1/users/{id}` over real HTTP against the real binary and PostgreSQL.

use parley_shared::ids::UserId;
use parley_testkit::TestContext;
use parley_testkit::rest::User;
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn a_chosen_name_and_avatar_stick_and_null_hands_the_name_back_to_the_token() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let alice = User::new(&ctx, &api.url(), "Alice");
    let me = alice.get("/v1/me").await.expect(200);
    assert_eq!((me["display_name"].as_str(), me["presence"]["status"].as_str()), (Some("Alice"), Some("offline")));

    let patched = alice
        .patch("/v1/me", json!({ "display_name": "  Alice Liddell ", "avatar_url": "https://cdn.example/a.png" }))
        .await
        .expect(200);
    assert_eq!(patched["display_name"], "Alice Liddell");
    assert_eq!(patched["avatar_url"], "https://cdn.example/a.png");
    // A token with another name: a chosen name is not overwritten when the token is seen.
    let again = alice.clone().with_token(&ctx.token(UserId::from_uuid(alice.uuid()), "Alicia"));
    again.get("/v1/conversations").await.expect(200);
    assert_eq!(again.get("/v1/me").await.expect(200)["display_name"], "Alice Liddell");
    // A field left out stays; null removes the avatar and hands the name back to the token.
    let only_avatar = alice.patch("/v1/me", json!({ "avatar_url": null })).await.expect(200);
    assert_eq!((only_avatar["display_name"].as_str(), only_avatar.get("avatar_url")), (Some("Alice Liddell"), None));
    let unchosen = again.patch("/v1/me", json!({ "display_name": null })).await.expect(200);
    assert_eq!(unchosen["display_name"], "Alicia", "the name in the token of the request");
    let renamed = alice.clone().with_token(&ctx.token(UserId::from_uuid(alice.uuid()), "Alice L."));
    assert_eq!(renamed.get("/v1/me").await.expect(200)["display_name"], "Alice L.");

    for (body, field) in [
        (json!({ "display_name": "   " }), "display_name"),
        (json!({ "display_name": "x".repeat(201) }), "display_name"),
        (json!({ "display_name": "bell\u{7}" }), "display_name"),
        (json!({ "avatar_url": "http://cdn.example/a.png" }), "avatar_url"),
        (json!({ "avatar_url": "javascript:alert(1)" }), "avatar_url"),
        (json!({ "avatar_url": format!("https://cdn.example/{}", "a".repeat(2048)) }), "avatar_url"),
    ] {
        let refused = renamed.patch("/v1/me", body.clone()).await.expect_problem(400, "validation_failed");
        assert_eq!(refused["field"], field, "{body}");
    }
    assert_eq!(renamed.get("/v1/me").await.expect(200)["display_name"], "Alice L.", "refused patches change nothing");
}

#[tokio::test]
async fn users_are_visible_to_themselves_and_to_whoever_shares_a_conversation_with_them() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let (alice, bob, carol) = (
        User::new(&ctx, &api.url(), "Alice"),
        User::new(&ctx, &api.url(), "Bob"),
        User::new(&ctx, &api.url(), "Carol"),
    );
    carol.get("/v1/me").await.expect(200);
    alice.group("pair", &[&bob]).await;
    bob.patch("/v1/me", json!({ "avatar_url": "https://cdn.example/b.png" })).await.expect(200);

    let seen = alice.get(&format!("/v1/users/{}", bob.uuid())).await.expect(200);
    assert_eq!(
        (seen["display_name"].as_str(), seen["avatar_url"].as_str()),
        (Some("Bob"), Some("https://cdn.example/b.png"))
    );
    assert_eq!(seen["presence"]["status"], "offline");
    assert_eq!(alice.get(&format!("/v1/users/{}", alice.uuid())).await.expect(200)["display_name"], "Alice");
    // Carol exists but shares nothing with Alice: the same 404 as a user who does not exist.
    alice.get(&format!("/v1/users/{}", carol.uuid())).await.expect_problem(404, "not_found");
    alice.get(&format!("/v1/users/{}", Uuid::now_v7())).await.expect_problem(404, "not_found");
    let refused = alice.get("/v1/users/not-a-uuid").await.expect_problem(400, "validation_failed");
    assert_eq!(refused["field"], "id", "the parameter's name in openapi.json, not poem-openapi's `param0`");
    assert!(!refused["detail"].as_str().expect("detail").contains("param0"), "{refused}");
}

#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let token = ctx.token(UserId::from_uuid(Uuid::now_v7()), "Alice");
    let me = format!("{}/v1/me", api.url());
    let http = reqwest::Client::new();
    let one = http.get(&me).header("authorization", format!("Bearer {token}")).send().await.expect("GET");
    assert_eq!(one.status(), 200);
    let two = http
        .get(&me)
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", "Bearer garbage")
        .send()
        .await
        .expect("GET");
    assert_eq!(two.status(), 401);
    let problem: serde_json::Value = two.json().await.expect("problem JSON");
    assert_eq!(problem["code"], "unauthorized", "{problem}");
}

#[tokio::test]
async fn names_and_titles_are_stored_as_people_will_see_them() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let alice = User::new(&ctx, &api.url(), "Alice");
    // NFC, bidi overrides removed; message text stays as sent.
    let patched = alice.patch("/v1/me", json!({ "display_name": "Ame\u{301}lie \u{202e}gnp.exe" })).await.expect(200);
    assert_eq!(patched["display_name"], "Am\u{e9}lie gnp.exe");
    for invisible in ["\u{200b}", "\u{feff}\u{2060}\u{200d}", "\u{202e}"] {
        let refused = alice.patch("/v1/me", json!({ "display_name": invisible })).await;
        assert_eq!(refused.expect_problem(400, "validation_failed")["field"], "display_name", "{invisible:?}");
    }
    let group =
        alice.post("/v1/conversations", json!({ "kind": "group", "title": "admin\u{202e}gnp.exe" })).await.expect(201);
    assert_eq!(group["title"], "admingnp.exe");
    let id = group["id"].as_str().expect("id");
    alice
        .post("/v1/conversations", json!({ "kind": "group", "title": "\u{200b}" }))
        .await
        .expect_problem(400, "validation_failed");
    alice
        .patch(&format!("/v1/conversations/{id}"), json!({ "title": "\u{2066}\u{200b}\u{2069}" }))
        .await
        .expect_problem(400, "validation_failed");
    let renamed = alice.patch(&format!("/v1/conversations/{id}"), json!({ "title": "Cafe\u{301}" })).await.expect(200);
    assert_eq!(renamed["title"], "Caf\u{e9}");
    let message = alice.say(Uuid::parse_str(id).expect("uuid"), "e\u{301} \u{202e}x").await;
    assert_eq!(message["text"], "e\u{301} \u{202e}x", "message text is never rewritten");

    // A token whose name has nothing visible stands for the user's id.
    let ghost = User::new(&ctx, &api.url(), "\u{200b}\u{200b}");
    assert_eq!(ghost.get("/v1/me").await.expect(200)["display_name"], ghost.uuid().to_string());
}
