// What every SDK test starts from: the private stack that `cargo xtask sdk-check` runs (its
// URLs in PARLEY_API_URL, PARLEY_BROKER_WS_URL, PARLEY_CONTROL_URL), users with tokens, and
// bounded waits. Run the tests through `cargo xtask sdk-check`, which starts that stack.
import { randomUUID } from "node:crypto";
import { type Envelope, type Parley, createParley, unwrap } from "../src/index.js";

function required(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run the SDK tests with \`cargo xtask sdk-check\`, which starts a private stack`);
  }
  return value;
}

export const apiUrl = required("PARLEY_API_URL");
export const brokerUrl = required("PARLEY_BROKER_WS_URL");
const controlUrl = required("PARLEY_CONTROL_URL");

/** Stops or starts the broker or nats-server of the private stack. */
export async function control(service: "broker" | "nats", action: "stop" | "start"): Promise<void> {
  const response = await fetch(`${controlUrl}/${service}/${action}`, { method: "POST" });
  if (!response.ok) {
    throw new Error(`${service} ${action}: ${response.status} ${await response.text()}`);
  }
}

export async function mintToken(userId: string, name: string, ttlSeconds = 3600): Promise<string> {
  const response = await fetch(`${controlUrl}/token`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user_id: userId, name, ttl_seconds: ttlSeconds }),
  });
  const { token } = (await response.json()) as { token: string };
  return token;
}

export interface User extends Parley {
  id: string;
  name: string;
  /** Every event the realtime client delivered, in delivery order. */
  events: Envelope[];
  /** How often the token provider was called. */
  tokenCalls: () => number;
}

/** A new user (their first request creates them) with an SDK instance; not yet connected. */
export async function newUser(name: string, options: { ttlSeconds?: number; refreshBeforeMs?: number } = {}): Promise<User> {
  const id = randomUUID();
  let calls = 0;
  const token = async () => {
    calls += 1;
    return mintToken(id, name, options.ttlSeconds);
  };
  const parley = createParley({
    apiUrl,
    brokerUrl,
    userId: id,
    token,
    backoff: { initialMs: 200, maxMs: 2000 },
    ...(options.refreshBeforeMs ? { refreshBeforeMs: options.refreshBeforeMs } : {}),
  });
  await unwrap(parley.rest.GET("/v1/me"));
  const events: Envelope[] = [];
  parley.realtime.on("event", (event) => events.push(event));
  return { ...parley, id, name, events, tokenCalls: () => calls };
}

/** Connects and waits for the first `hello`. */
export async function connected(user: User): Promise<User> {
  const hello = new Promise<void>((resolve) => {
    const off = user.realtime.on("hello", () => {
      off();
      resolve();
    });
  });
  user.realtime.connect();
  await within(10_000, `${user.name}'s hello`, hello);
  return user;
}

export async function within<T>(ms: number, what: string, pending: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([pending, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `check` until it holds (every 25 ms, at most `ms`). */
export async function until(ms: number, what: string, check: () => boolean): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

export async function groupOf(owner: User, title: string, members: User[]): Promise<string> {
  const conversation = await unwrap(
    owner.rest.POST("/v1/conversations", {
      body: { kind: "group", title, member_ids: members.map((member) => member.id) },
    }),
  );
  return conversation.id;
}

export async function send(user: User, conversationId: string, text: string): Promise<void> {
  await unwrap(
    user.rest.POST("/v1/conversations/{id}/messages", { params: { path: { id: conversationId } }, body: { text } }),
  );
}

/** The texts of the `message.created` events a user got in a conversation, in delivery order. */
export function texts(user: User, conversationId: string): string[] {
  return user.events
    .filter((event) => event.conversation_id === conversationId && event.type === "message.created")
    .map((event) => (event.type === "message.created" ? (event.data.body ?? "") : ""));
}

export function seqs(user: User, conversationId: string): number[] {
  return user.events.filter((event) => event.conversation_id === conversationId).map((event) => event.seq);
}
