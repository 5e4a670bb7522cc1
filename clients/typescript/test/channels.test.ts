// Channels through the SDK against a live stack: an anonymous page follows a public channel
// across a broker restart (what it missed is recovered, once, in order), and a signed-in user
// hears their own `user:<id>` channel.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, test } from "node:test";
import { type ChannelPublication, RealtimeClient, createRestClient } from "../src/index.js";
import { apiUrl, brokerUrl, connected, control, newUser, until, within } from "./harness.js";

const serverKey = process.env.PARLEY_SERVER_API_KEY ?? "";
const clients: RealtimeClient[] = [];
after(() => clients.forEach((client) => client.close()));

/** A backend's publication, with the server API key. */
async function publish(channel: string, data: unknown): Promise<void> {
  const response = await fetch(`${apiUrl}/v1/channels/${channel}/publications`, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-API-Key": serverKey },
    body: JSON.stringify({ data }),
  });
  assert.equal(response.status, 202, await response.text());
}

test("an anonymous subscriber gets every publication once, in order, across a broker restart", { timeout: 60_000 }, async () => {
  const channel = `public:sdk-${randomUUID()}`;
  const anonymous = new RealtimeClient({
    url: brokerUrl,
    token: null,
    rest: createRestClient({ baseUrl: apiUrl, token: null }),
    backoff: { initialMs: 200, maxMs: 2000 },
  });
  clients.push(anonymous);
  const received: ChannelPublication[] = [];
  anonymous.on("publication", (publication) => received.push(publication));
  const subscribed = new Promise<void>((resolve) => {
    const off = anonymous.on("hello", () => {
      off();
      resolve();
    });
  });
  anonymous.subscribe(channel);
  anonymous.connect();
  await within(10_000, "the anonymous hello", subscribed);
  assert.equal(anonymous.userId, undefined);
  await until(10_000, "the subscription's position", () => channel in anonymous.channelPositions());

  for (const n of [1, 2, 3]) {
    await publish(channel, { n });
  }
  await until(10_000, "3 publications", () => received.length === 3);

  await control("broker", "stop");
  for (const n of [4, 5]) {
    await publish(channel, { n });
  }
  await control("broker", "start");
  await publish(channel, { n: 6 });
  await until(30_000, "6 publications", () => received.length >= 6);
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.deepEqual(
    received.map((publication) => [publication.offset, (publication.data as { n: number }).n]),
    [1, 2, 3, 4, 5, 6].map((n) => [n, n]),
  );
  assert.equal(anonymous.channelPositions()[channel]?.offset, 6);
});

test("a user hears their own user channel", { timeout: 30_000 }, async () => {
  const alice = await newUser("Alice");
  clients.push(alice.realtime);
  const received: ChannelPublication[] = [];
  alice.realtime.on("publication", (publication) => received.push(publication));
  alice.realtime.subscribe(`user:${alice.id}`);
  await connected(alice);
  await until(10_000, "the subscription", () => `user:${alice.id}` in alice.realtime.channelPositions());
  await publish(`user:${alice.id}`, { notification: "hello Alice" });
  await until(10_000, "the notification", () => received.length === 1);
  assert.deepEqual(received[0]?.data, { notification: "hello Alice" });
});
