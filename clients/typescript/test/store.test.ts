// The store applies each delivered event to what a chat UI renders.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { unwrap } from "../src/index.js";
import { type User, connected, groupOf, newUser, send, until } from "./harness.js";

const users: User[] = [];
after(() => users.forEach((user) => user.realtime.close()));

test("the store follows messages, edits, reactions, deletions, unread counts and read ticks", { timeout: 30_000 }, async () => {
  const alice = await newUser("Alice");
  const bob = await newUser("Bob");
  users.push(alice, bob);
  const conversationId = await groupOf(alice, "Store", [bob]);
  await Promise.all([connected(alice), connected(bob)]);
  await alice.store.loadConversations();
  await alice.store.loadMessages(conversationId);
  assert.equal(alice.store.conversation(conversationId)?.title, "Store");

  await send(bob, conversationId, "hello Alice");
  await until(5000, "Bob's message in Alice's store", () => alice.store.messages(conversationId).length === 1);
  const [message] = alice.store.messages(conversationId);
  assert.equal(message?.text, "hello Alice");
  assert.equal(alice.store.conversation(conversationId)?.unread_count, 1);
  assert.equal(alice.store.conversation(conversationId)?.last_message?.id, message?.id);

  const path = { id: conversationId, message_id: message?.id ?? "" };
  await unwrap(bob.rest.PATCH("/v1/conversations/{id}/messages/{message_id}", { params: { path }, body: { text: "hello, Alice" } }));
  await unwrap(alice.rest.PUT("/v1/conversations/{id}/messages/{message_id}/reactions/{emoji}", { params: { path: { ...path, emoji: "👍" } } }));
  await until(5000, "the edit and the reaction", () => message?.text === "hello, Alice" && message.reactions.length === 1);
  assert.deepEqual(message?.reactions, [{ emoji: "👍", count: 1, me: true }]);

  await unwrap(alice.rest.POST("/v1/conversations/{id}/read", { params: { path: { id: conversationId } }, body: { seq: message?.seq ?? 0 } }));
  await until(5000, "Alice's unread count back to 0", () => alice.store.conversation(conversationId)?.unread_count === 0);

  // Bob's view: his message's tick turns to read once Alice's read receipt arrives.
  await bob.store.loadConversations();
  await bob.store.loadMessages(conversationId);
  const mine = bob.store.messages(conversationId).find((candidate) => candidate.id === message?.id);
  assert.ok(mine);
  await until(5000, "Bob's read tick", () => bob.store.receiptState(mine) === "read");

  await unwrap(bob.rest.DELETE("/v1/conversations/{id}/messages/{message_id}", { params: { path } }));
  await until(5000, "the deletion", () => message?.deleted === true);
  assert.equal(message?.text, undefined);
});
