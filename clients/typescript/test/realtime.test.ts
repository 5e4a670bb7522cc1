// Token refresh, membership, typing and presence against a live stack.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { unwrap } from "../src/index.js";
import { randomUUID } from "node:crypto";
import { type User, brokerUrl, connected, groupOf, mintToken, newUser, send, texts, until, within } from "./harness.js";

const users: User[] = [];
after(() => users.forEach((user) => user.realtime.close()));

test("a token refreshed before exp keeps the socket open", { timeout: 30_000 }, async () => {
  // The broker closes a connection whose token expired (4001): surviving past the first token's
  // expiry on one connection shows the in-band refresh worked.
  const alice = await newUser("Alice", { ttlSeconds: 4, refreshBeforeMs: 2000 });
  const bob = await newUser("Bob");
  users.push(alice, bob);
  const conversationId = await groupOf(bob, "Refresh", [alice]);
  await connected(alice);
  const connection = alice.realtime.hello?.connection_id;
  const states: string[] = [];
  alice.realtime.on("state", (state) => states.push(state));
  await new Promise((resolve) => setTimeout(resolve, 7000));
  await send(bob, conversationId, "still there?");
  await until(5000, "the message on the same connection", () => texts(alice, conversationId).includes("still there?"));
  assert.deepEqual(states, [], "the connection never dropped");
  assert.equal(alice.realtime.hello?.connection_id, connection);
  assert.ok(alice.tokenCalls() >= 3, `the token provider was asked again (${alice.tokenCalls()} calls)`);
});

test("a removed member stops receiving", { timeout: 30_000 }, async () => {
  const alice = await newUser("Alice");
  const bob = await newUser("Bob");
  const carol = await newUser("Carol");
  users.push(alice, bob, carol);
  const conversationId = await groupOf(alice, "Removal", [bob, carol]);
  await Promise.all([connected(bob), connected(carol)]);
  await send(alice, conversationId, "before");
  await until(5000, "both to get 'before'", () =>
    [bob, carol].every((user) => texts(user, conversationId).includes("before")),
  );
  await unwrap(
    alice.rest.DELETE("/v1/conversations/{id}/members/{user_id}", {
      params: { path: { id: conversationId, user_id: carol.id } },
    }),
  );
  await until(5000, "Carol to hear she was removed", () =>
    carol.events.some((event) => event.type === "member.removed" && event.data.user_id === carol.id),
  );
  await send(alice, conversationId, "after");
  await until(5000, "Bob to get 'after'", () => texts(bob, conversationId).includes("after"));
  await new Promise((resolve) => setTimeout(resolve, 500));
  assert.deepEqual(texts(carol, conversationId), ["before"]);
  const last = carol.events.filter((event) => event.conversation_id === conversationId).at(-1);
  assert.equal(last?.type, "member.removed");
});

test("typing is throttled, shown to the others and cleared by stop", { timeout: 30_000 }, async () => {
  const alice = await newUser("Alice");
  const bob = await newUser("Bob");
  users.push(alice, bob);
  const conversationId = await groupOf(alice, "Typing", [bob]);
  await Promise.all([connected(alice), connected(bob)]);
  const changes: string[][] = [];
  alice.realtime.on("typing", (change) => change.conversationId === conversationId && changes.push(change.userIds));
  for (let key = 0; key < 20; key += 1) {
    bob.realtime.typing(conversationId);
  }
  await until(5000, "Alice to see Bob typing", () => alice.realtime.typingIn(conversationId).includes(bob.id));
  bob.realtime.stopTyping(conversationId);
  await until(5000, "Alice to see Bob stop", () => alice.realtime.typingIn(conversationId).length === 0);
  // Twenty keystrokes: one `start` (renewals wait 3 s) and one `stop`.
  assert.deepEqual(changes, [[bob.id], []]);
});

test("presence is kept as a map of user to status", { timeout: 30_000 }, async () => {
  const alice = await newUser("Alice");
  const bob = await newUser("Bob");
  users.push(alice, bob);
  await groupOf(alice, "Presence", [bob]);
  await connected(alice);
  await connected(bob);
  await until(10_000, "Bob online", () => alice.realtime.presenceOf(bob.id)?.status === "online");
  bob.realtime.close();
  await until(10_000, "Bob offline", () => alice.realtime.presenceOf(bob.id)?.status === "offline");
  assert.ok(alice.realtime.presenceOf(bob.id)?.lastSeenAt, "offline carries last_seen_at");
});

test("a terminal close code stops reconnecting", { timeout: 30_000 }, async () => {
  // The refresh hands over a token for another user: the broker closes with 4100 (bad token),
  // which the close-code table marks terminal.
  const { RealtimeClient } = await import("../src/index.js");
  const alice = await newUser("Alice");
  users.push(alice);
  let calls = 0;
  const client = new RealtimeClient({
    url: brokerUrl,
    rest: alice.rest,
    token: () => mintToken(calls++ === 0 ? alice.id : randomUUID(), "Alice", 4),
    refreshBeforeMs: 3000,
  });
  const closed = new Promise<{ code: number }>((resolve) => client.on("closed", resolve));
  client.connect();
  try {
    const { code } = await within(10_000, "the terminal close", closed);
    assert.equal(code, 4100);
    assert.equal(client.state, "closed");
    await new Promise((resolve) => setTimeout(resolve, 1000));
    assert.equal(calls, 2, "no reconnect after a terminal close");
  } finally {
    client.close();
  }
});

test("a mention reaches the named member as a notification, and so does reading it", { timeout: 30_000 }, async () => {
  const alice = await newUser("Alice");
  const bob = await newUser("Bob");
  users.push(alice, bob);
  const conversationId = await groupOf(alice, "Mentions", [bob]);
  await connected(bob);
  const changes: string[] = [];
  let unread = -1;
  bob.realtime.on("notification", (change) => {
    changes.push(change.type === "notification" ? change.notification.kind : change.type);
    unread = change.unread_count;
  });
  await unwrap(
    alice.rest.POST("/v1/conversations/{id}/messages", {
      params: { path: { id: conversationId } },
      body: { text: "@Bob lunch?", mentions: [bob.id] },
    }),
  );
  await until(5000, "Bob to be told of the mention", () => changes.includes("mention"));
  assert.equal(unread, 2, "added to the group, then mentioned");
  await unwrap(bob.rest.POST("/v1/me/notifications/read", { body: {} }));
  await until(5000, "Bob's devices to hear they were read", () => changes.includes("notifications.read"));
  assert.equal(unread, 0);
});
