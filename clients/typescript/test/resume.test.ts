// The resume flow against a live stack: events missed while a client was away arrive exactly
// once and in order, whether it closed, the broker restarted or NATS restarted.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { RealtimeClient } from "../src/index.js";
import { type User, brokerUrl, connected, control, groupOf, mintToken, newUser, send, seqs, texts, until } from "./harness.js";

const users: User[] = [];
after(() => users.forEach((user) => user.realtime.close()));

async function pair(): Promise<{ alice: User; bob: User; conversationId: string }> {
  const alice = await newUser("Alice");
  const bob = await newUser("Bob");
  users.push(alice, bob);
  const conversationId = await groupOf(alice, "Resume", [bob]);
  await connected(bob);
  return { alice, bob, conversationId };
}

const expected = (count: number) => Array.from({ length: count }, (_, index) => `m${index + 1}`);

async function sendTwenty(alice: User, conversationId: string): Promise<void> {
  for (const text of expected(20)) {
    await send(alice, conversationId, text);
  }
}

/** Bob's delivered events in the conversation: gapless seqs, each once, and the 20 texts in order. */
function assertExactlyOnceInOrder(bob: User, conversationId: string): void {
  const delivered = seqs(bob, conversationId);
  const first = delivered[0] ?? 0;
  assert.deepEqual(delivered, Array.from({ length: delivered.length }, (_, index) => first + index));
  assert.deepEqual(texts(bob, conversationId), expected(20));
}

test("20 messages missed while disconnected arrive exactly once, in order", { timeout: 60_000 }, async () => {
  const { alice, bob, conversationId } = await pair();
  bob.realtime.close();
  await sendTwenty(alice, conversationId);
  await connected(bob);
  await until(15_000, "20 messages", () => texts(bob, conversationId).length >= 20);
  await new Promise((resolve) => setTimeout(resolve, 300));
  assertExactlyOnceInOrder(bob, conversationId);
});

test("the same across a broker restart", { timeout: 90_000 }, async () => {
  const { alice, bob, conversationId } = await pair();
  const states: string[] = [];
  bob.realtime.on("state", (state) => states.push(state));
  await control("broker", "stop");
  await until(10_000, "Bob to notice the broker is gone", () => bob.realtime.state === "reconnecting");
  try {
    await sendTwenty(alice, conversationId);
    // Long enough for reconnect attempts to meet the closed port (refused, not hanging).
    await new Promise((resolve) => setTimeout(resolve, 1500));
  } finally {
    await control("broker", "start");
  }
  await until(30_000, "20 messages", () => texts(bob, conversationId).length >= 20);
  await new Promise((resolve) => setTimeout(resolve, 300));
  assertExactlyOnceInOrder(bob, conversationId);
  assert.deepEqual(states.slice(-2), ["reconnecting", "open"]);
});

test("the same across a NATS restart", { timeout: 90_000 }, async () => {
  const { alice, bob, conversationId } = await pair();
  await control("nats", "stop");
  try {
    await sendTwenty(alice, conversationId);
  } finally {
    await control("nats", "start");
  }
  await until(60_000, "20 messages", () => texts(bob, conversationId).length >= 20);
  await new Promise((resolve) => setTimeout(resolve, 300));
  assertExactlyOnceInOrder(bob, conversationId);
});

test("saved positions that are behind are backfilled", { timeout: 30_000 }, async () => {
  // A new client of Bob's starts from saved positions: the events after them come from the API.
  const { alice, bob, conversationId } = await pair();
  await sendTwenty(alice, conversationId);
  await until(15_000, "20 live messages", () => texts(bob, conversationId).length >= 20);
  bob.realtime.close();
  const positions = bob.realtime.positions();
  assert.ok((positions[conversationId] ?? 0) > 10);

  const resumed = new RealtimeClient({
    url: brokerUrl,
    rest: bob.rest,
    token: () => mintToken(bob.id, "Bob"),
    positions: { [conversationId]: 5 },
  });
  const seen: number[] = [];
  resumed.on("event", (event) => event.conversation_id === conversationId && seen.push(event.seq));
  resumed.connect();
  try {
    // Ten more while it backfills: they arrive live and also in the backfill's pages.
    for (let index = 0; index < 10; index += 1) {
      await send(alice, conversationId, `late ${index}`);
    }
    const last = (positions[conversationId] ?? 0) + 10;
    await until(15_000, "everything after seq 5", () => seen.at(-1) === last);
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.deepEqual(seen, Array.from({ length: last - 5 }, (_, index) => 6 + index));
  } finally {
    resumed.close();
  }
});
