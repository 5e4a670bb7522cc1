import { type BackoffOptions, backoffDelay, sleep } from "./backoff.js";
import { type ChannelPublication, Channels, type SubscribeOptions } from "./channels.js";
import { Emitter } from "./emitter.js";
import { CLOSE_CODES } from "./generated/closeCodes.js";
import type {
  ChannelPosition,
  ClientFrame,
  Envelope,
  ErrorCode,
  Hello,
  PresenceStatus,
  ServerFrame,
} from "./generated/protocol.js";
import { ProblemError, type RestClient, type TokenProvider } from "./rest.js";

/** The part of the WebSocket API the client uses: browsers' and Node's (22+, or 18+ with `ws`). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: never) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string; wasClean: boolean }) => void) | null;
  onerror: ((event: never) => void) | null;
}
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

export interface RealtimeOptions {
  /** The broker's WebSocket URL, e.g. `ws://127.0.0.1:8081/ws`. */
  url: string;
  /**
   * Called before every (re)connect and before the token expires (in-band `auth` refresh).
   * `null`: an anonymous connection (where the broker allows them), which may only subscribe
   * to public channels.
   */
  token: TokenProvider | null;
  /** Backfills missed events (`GET /v1/conversations/{id}/events`). */
  rest: RestClient;
  /** Defaults to the global `WebSocket`. */
  WebSocket?: WebSocketConstructor;
  backoff?: BackoffOptions;
  /** Ask for a fresh token this long before the current one expires (default 60 s; at most half its lifetime). */
  refreshBeforeMs?: number;
  /** Send a `ping` frame this often (default: the broker's heartbeat interval)… */
  pingIntervalMs?: number;
  /** …and treat the link as dead when nothing arrives this long after it (default 10 s). */
  pongTimeoutMs?: number;
  /** Give up a connection attempt that brought no `hello` within this long (default 10 s). */
  connectTimeoutMs?: number;
  /** While the user types, renew `typing` `start` this often (default 3 s)… */
  typingRenewMs?: number;
  /** …and send `stop` after this long without a keystroke (default 5 s). */
  typingIdleMs?: number;
  /**
   * Delivered positions (`conversation_id → seq`) saved from an earlier session: events after
   * them are backfilled. Without them, the first `hello` is the starting point.
   */
  positions?: Record<string, number>;
}

export interface TypingChange {
  conversationId: string;
  /** Everyone typing in the conversation now. */
  userIds: string[];
}

export interface PresenceState {
  status: PresenceStatus;
  lastSeenAt?: string;
}

export interface CloseInfo {
  code: number;
  reason: string;
}

/** The frames that change the user's notification inbox. */
export type NotificationChange = Extract<
  ServerFrame,
  { type: "notification" | "notifications.read" | "notifications.cleared" }
>;

export type RealtimeEvents = {
  /** Each conversation's events exactly once, in `seq` order, whether live or backfilled. */
  event: Envelope;
  hello: Hello;
  state: ConnectionState;
  typing: TypingChange;
  presence: { userId: string } & PresenceState;
  /** A channel's publication: once each, in `offset` order on durable channels. */
  publication: ChannelPublication;
  /** A durable channel's publications after `from` up to `to` are gone for good: reload its state. */
  channelReset: { channel: string; from: number; to: number };
  /** An `error` frame, or a failure the client will retry by itself (a backfill, a token). */
  error: {
    code: ErrorCode | "backfill_failed" | "token_failed" | "connect_failed";
    message: string;
    userIds?: string[];
    /** The channel a `subscribe` or `publish` was refused for. */
    channel?: string;
  };
  /** Events after `seq` are no longer stored: reload the conversation's messages. */
  reset: { conversationId: string; lastSeq: number };
  /** The broker closed with a terminal code (see `CLOSE_CODES`): the client stopped. */
  closed: CloseInfo;
  /**
   * A change of the user's notification inbox, from any of their devices: a new notification
   * (`type: "notification"`), `notifications.read` or `notifications.cleared`, each with the
   * `unread_count`. Not replayed after a reconnect: list `GET /v1/me/notifications?status=unread`.
   */
  notification: NotificationChange;
};

interface Lane {
  /** Live events not yet delivered, in arrival order. */
  pending: Envelope[];
  /** Backfill at least up to this seq (from `hello`). */
  backfillTo: number;
  running: boolean;
}

/**
 * One user's realtime connection to Parley, with the resume flow built in: after every `hello`
 * and on any gap it backfills through the API, drops duplicates, and emits each conversation's
 * events exactly once, in order. It reconnects by itself (exponential backoff with jitter,
 * according to the close code), refreshes its token before `exp`, throttles typing and keeps
 * presence as state.
 */
export class RealtimeClient extends Emitter<RealtimeEvents> {
  readonly #options: RealtimeOptions;
  readonly #WebSocket: WebSocketConstructor;
  #socket: WebSocketLike | undefined;
  #state: ConnectionState = "closed";
  #stopped = true;
  #attempt = 0;
  #hello: Hello | undefined;
  #helloSeen = false;
  /** Whether the current socket has delivered its `hello`. */
  #helloOnCurrent = false;
  readonly #positions = new Map<string, number>();
  readonly #lanes = new Map<string, Lane>();
  readonly #timers = new Set<ReturnType<typeof setTimeout>>();
  #refreshTimer: ReturnType<typeof setTimeout> | undefined;
  #pingTimer: ReturnType<typeof setInterval> | undefined;
  #lastFrameAt = 0;
  readonly #typingOut = new Map<string, { sentAt: number; idle: ReturnType<typeof setTimeout> }>();
  readonly #typingIn = new Map<string, Map<string, ReturnType<typeof setTimeout>>>();
  readonly #presence = new Map<string, PresenceState>();
  readonly #presenceFollowed = new Set<string>();
  readonly #channels: Channels;
  readonly #onOnline = () => {
    if (!this.#stopped && this.#state === "reconnecting") {
      this.#attempt = 0;
      this.#reconnectNow();
    }
  };
  // A browser that lost its network may keep a dead socket open for minutes: drop it now and
  // reconnect (and resume) when the network is back.
  readonly #onOffline = () => this.#abandon();

  constructor(options: RealtimeOptions) {
    super();
    this.#options = options;
    const WebSocketImpl = options.WebSocket ?? (globalThis.WebSocket as unknown as WebSocketConstructor | undefined);
    if (!WebSocketImpl) {
      throw new Error("no WebSocket implementation: pass `WebSocket` (Node < 22: the `ws` package)");
    }
    this.#WebSocket = WebSocketImpl;
    this.#channels = new Channels({
      send: (frame) => this.#send(frame),
      deliver: (publication) => this.emit("publication", publication),
      reset: (channel, from, to) => this.emit("channelReset", { channel, from, to }),
      failed: (code, message, channel) => this.emit("error", { code: code as ErrorCode, message, channel }),
      rest: options.rest,
    });
    for (const [conversationId, seq] of Object.entries(options.positions ?? {})) {
      this.#positions.set(conversationId, seq);
    }
  }

  get state(): ConnectionState {
    return this.#state;
  }

  /** The latest `hello` (connection id, user, limits, …). */
  get hello(): Hello | undefined {
    return this.#hello;
  }

  /** The connection's user (undefined on an anonymous connection). */
  get userId(): string | undefined {
    return this.#hello?.user_id ?? undefined;
  }

  /** The highest delivered `seq` of each conversation: save it to resume in a later session. */
  positions(): Record<string, number> {
    return Object.fromEntries(this.#positions);
  }

  /** The users typing in a conversation now (never the caller). */
  typingIn(conversationId: string): string[] {
    return [...(this.#typingIn.get(conversationId)?.keys() ?? [])];
  }

  /** The last presence frame about a user; before one arrives, use REST's `members[].presence`. */
  presenceOf(userId: string): PresenceState | undefined {
    return this.#presence.get(userId);
  }

  /** Opens the connection; it stays up (reconnecting as needed) until [`close`](#close). */
  connect(): void {
    if (!this.#stopped) {
      return;
    }
    this.#stopped = false;
    globalThis.addEventListener?.("online", this.#onOnline);
    globalThis.addEventListener?.("offline", this.#onOffline);
    void this.#open();
  }

  /** Closes the connection (1000) and every timer; the client can `connect` again later. */
  close(): void {
    this.#stopped = true;
    globalThis.removeEventListener?.("online", this.#onOnline);
    globalThis.removeEventListener?.("offline", this.#onOffline);
    for (const conversationId of this.#typingOut.keys()) {
      this.stopTyping(conversationId);
    }
    this.#clearConnectionTimers();
    for (const timer of this.#timers) {
      clearTimeout(timer);
    }
    this.#timers.clear();
    for (const users of this.#typingIn.values()) {
      for (const timer of users.values()) {
        clearTimeout(timer);
      }
    }
    this.#typingIn.clear();
    const socket = this.#socket;
    this.#socket = undefined;
    socket?.close(1000, "client closed");
    this.#setState("closed");
  }

  /** Call on every keystroke: sends `start` at most every `typingRenewMs`, `stop` when idle. */
  typing(conversationId: string): void {
    const now = Date.now();
    const current = this.#typingOut.get(conversationId);
    if (current) {
      clearTimeout(current.idle);
    }
    const renew = this.#options.typingRenewMs ?? 3000;
    let sentAt = current?.sentAt ?? 0;
    if (now - sentAt >= renew && this.#send({ type: "typing", conversation_id: conversationId, state: "start" })) {
      sentAt = now;
    }
    const idle = setTimeout(() => this.stopTyping(conversationId), this.#options.typingIdleMs ?? 5000);
    this.#typingOut.set(conversationId, { sentAt, idle });
  }

  /** The user stopped typing (sent a message, left the field). */
  stopTyping(conversationId: string): void {
    const current = this.#typingOut.get(conversationId);
    if (!current) {
      return;
    }
    clearTimeout(current.idle);
    this.#typingOut.delete(conversationId);
    this.#send({ type: "typing", conversation_id: conversationId, state: "stop" });
  }

  /** Follow these users' presence (members of large groups; small ones are followed anyway). */
  subscribePresence(userIds: string[]): void {
    const added = userIds.filter((id) => !this.#presenceFollowed.has(id));
    added.forEach((id) => this.#presenceFollowed.add(id));
    if (added.length > 0) {
      this.#send({ type: "presence.subscribe", user_ids: added });
    }
  }

  unsubscribePresence(userIds: string[]): void {
    const removed = userIds.filter((id) => this.#presenceFollowed.delete(id));
    if (removed.length > 0) {
      this.#send({ type: "presence.unsubscribe", user_ids: removed });
    }
  }

  /**
   * Subscribe to a channel, now and after every reconnect, resuming durable channels from the
   * last delivered offset: publications arrive as `publication` events.
   */
  subscribe(channel: string, options: SubscribeOptions = {}): void {
    this.#channels.add(channel, options);
  }

  unsubscribe(channel: string): void {
    this.#channels.remove(channel);
  }

  /** Publish into a channel this connection subscribes to (where the namespace lets clients). */
  publish(channel: string, data: unknown): boolean {
    return this.#send({ type: "publish", channel, data });
  }

  /** Each durable channel's last delivered position: save it to resume in a later session (`since`). */
  channelPositions(): Record<string, ChannelPosition> {
    return this.#channels.positions();
  }

  // --- connection ---

  async #open(): Promise<void> {
    this.#setState(this.#helloSeen ? "reconnecting" : "connecting");
    let token: string | undefined;
    try {
      token = (await this.#options.token?.()) ?? undefined;
    } catch (error) {
      this.emit("error", { code: "token_failed", message: String(error) });
      this.#scheduleReconnect(undefined);
      return;
    }
    if (this.#stopped) {
      return;
    }
    let socket: WebSocketLike;
    try {
      const protocols = token === undefined ? ["parley.v1"] : ["parley.v1", `parley.bearer.${token}`];
      socket = new this.#WebSocket(this.#options.url, protocols);
    } catch (error) {
      // A malformed URL throws at once: say so, and keep trying (the app may fix its config).
      this.emit("error", { code: "connect_failed", message: String(error) });
      this.#scheduleReconnect(undefined);
      return;
    }
    this.#socket = socket;
    this.#helloOnCurrent = false;
    let opened = false;
    socket.onopen = () => {
      opened = true;
      if (token === undefined) {
        // Anonymous: `hello` follows the first frame.
        void this.#channels.firstFrame().then((frame) => socket.readyState === 1 && socket.send(JSON.stringify(frame)));
      }
    };
    // A handshake that neither fails nor brings `hello` in time is given up and retried.
    this.#later(this.#options.connectTimeoutMs ?? 10_000, () => {
      if (socket === this.#socket && !this.#helloOnCurrent) {
        this.#abandon();
      }
    });
    socket.onmessage = (message) => {
      if (socket === this.#socket && typeof message.data === "string") {
        this.#onFrame(message.data);
      }
    };
    socket.onclose = (event) => {
      if (socket === this.#socket) {
        this.#onClose(event.code, event.reason);
      }
    };
    socket.onerror = () => {
      // Once open, a close event follows and decides. A connection that failed before opening
      // may get no close event at all (Node 20's WebSocket), so it is handled here.
      if (!opened && socket === this.#socket) {
        this.#onClose(1006, "connection failed");
      }
    };
  }

  #onClose(code: number, reason: string): void {
    this.#socket = undefined;
    this.#clearConnectionTimers();
    if (this.#stopped) {
      this.#setState("closed");
      return;
    }
    const known = (CLOSE_CODES as Record<number, { reason: string; reconnect: boolean }>)[code];
    if (known && !known.reconnect) {
      this.#stopped = true;
      this.#setState("closed");
      this.emit("closed", { code, reason: reason || known.reason });
      return;
    }
    this.#scheduleReconnect(code);
  }

  #scheduleReconnect(code: number | undefined): void {
    this.#setState("reconnecting");
    if ((globalThis as { navigator?: { onLine?: boolean } }).navigator?.onLine === false) {
      return; // The `online` event reconnects.
    }
    // A broker restarting (1012) asks for an immediate reconnect; spread it over a second.
    const delay =
      code === 1012 ? Math.floor(Math.random() * 1000) : backoffDelay(this.#attempt++, this.#options.backoff);
    this.#later(delay, () => this.#reconnectNow());
  }

  #reconnectNow(): void {
    if (this.#stopped || this.#socket) {
      return;
    }
    void this.#open();
  }

  /** Abandons a link that stopped answering (offline, a dead NAT entry) and reconnects. */
  #abandon(): void {
    const socket = this.#socket;
    if (!socket) {
      return;
    }
    this.#socket = undefined;
    socket.close(4000, "link lost");
    this.#onClose(1006, "link lost");
  }

  #send(frame: ClientFrame): boolean {
    const socket = this.#socket;
    if (!socket || socket.readyState !== 1 || !this.#hello) {
      return false;
    }
    socket.send(JSON.stringify(frame));
    return true;
  }

  #onFrame(text: string): void {
    this.#lastFrameAt = Date.now();
    let frame: ServerFrame;
    try {
      frame = JSON.parse(text) as ServerFrame;
    } catch {
      return;
    }
    switch (frame.type) {
      case "hello":
        this.#onHello(frame);
        break;
      case "event":
        this.#onEvent(frame.event);
        break;
      case "typing":
        this.#onTyping(frame.conversation_id, frame.actor, frame.data.state === "start");
        break;
      case "presence": {
        const state: PresenceState = { status: frame.status };
        if (frame.last_seen_at) {
          state.lastSeenAt = frame.last_seen_at;
        }
        this.#presence.set(frame.user_id, state);
        this.emit("presence", { userId: frame.user_id, ...state });
        break;
      }
      case "authenticated":
        this.#scheduleRefresh(frame.expires_at);
        break;
      case "error":
        if (frame.channel) {
          this.#channels.onError(frame);
        } else {
          this.emit("error", { code: frame.code, message: frame.message, userIds: frame.user_ids ?? [] });
        }
        break;
      case "subscribed":
        this.#channels.onSubscribed(frame);
        break;
      case "publication":
        this.#channels.onPublication(frame);
        break;
      case "notification":
      case "notifications.read":
      case "notifications.cleared":
        this.emit("notification", frame);
        break;
      case "pong":
      case "presence.subscribed":
      case "unsubscribed":
      case "published":
        break;
    }
  }

  #onHello(hello: Hello): void {
    const first = !this.#helloSeen;
    this.#helloOnCurrent = true;
    this.#hello = hello;
    this.#helloSeen = true;
    this.#attempt = 0;
    this.#setState("open");
    if (hello.expires_at) this.#scheduleRefresh(hello.expires_at);
    this.#startPings(hello.heartbeat_interval_ms);
    if (this.#presenceFollowed.size > 0) {
      this.#send({ type: "presence.subscribe", user_ids: [...this.#presenceFollowed] });
    }
    this.emit("hello", hello);
    this.#channels.resubscribeAll();
    for (const { conversation_id, last_seq } of hello.conversations) {
      this.#catchUp(conversation_id, last_seq, first);
    }
    if (hello.conversations_truncated) {
      const listed = new Set(hello.conversations.map((c) => c.conversation_id));
      this.#catchUpUnlisted(listed, first).catch((error: unknown) =>
        this.emit("error", { code: "backfill_failed", message: String(error) }),
      );
    }
  }

  /** A conversation's latest seq is `lastSeq`: backfill what this client has not delivered. */
  #catchUp(conversationId: string, lastSeq: number, first: boolean): void {
    if (!this.#positions.has(conversationId)) {
      // Unknown at the first hello: start from now. Unknown later: it is new, so all of it.
      this.#positions.set(conversationId, first ? lastSeq : 0);
    }
    const lane = this.#lane(conversationId);
    lane.backfillTo = Math.max(lane.backfillTo, lastSeq);
    void this.#drain(conversationId);
  }

  /** `hello` listed only the most active conversations: the others' positions come from REST. */
  async #catchUpUnlisted(listed: Set<string>, first: boolean): Promise<void> {
    let cursor: string | undefined;
    do {
      const { data } = await this.#options.rest.GET("/v1/conversations", {
        params: { query: { limit: 200, ...(cursor ? { cursor } : {}) } },
      });
      if (!data) {
        return;
      }
      for (const conversation of data.items) {
        if (!listed.has(conversation.id)) {
          this.#catchUp(conversation.id, conversation.last_seq, first);
        }
      }
      cursor = data.next_cursor ?? undefined;
    } while (cursor);
  }

  #onEvent(event: Envelope): void {
    const lane = this.#lane(event.conversation_id);
    lane.pending.push(event);
    void this.#drain(event.conversation_id);
  }

  #lane(conversationId: string): Lane {
    let lane = this.#lanes.get(conversationId);
    if (!lane) {
      lane = { pending: [], backfillTo: 0, running: false };
      this.#lanes.set(conversationId, lane);
    }
    return lane;
  }

  /** Delivers a conversation's events in order, backfilling any gap; one run per conversation at a time. */
  async #drain(conversationId: string): Promise<void> {
    const lane = this.#lane(conversationId);
    if (lane.running) {
      return;
    }
    lane.running = true;
    try {
      for (let failures = 0; !this.#stopped; ) {
        if (!this.#positions.has(conversationId)) {
          // First seen live (created since the last hello): everything from the start.
          this.#positions.set(conversationId, 0);
        }
        let delivered = this.#positions.get(conversationId) ?? 0;
        lane.pending.sort((a, b) => a.seq - b.seq);
        while (lane.pending.length > 0 && (lane.pending[0]?.seq ?? 0) <= delivered + 1) {
          const event = lane.pending.shift() as Envelope;
          if (event.seq === delivered + 1) {
            delivered = this.#deliver(event);
          }
          if (!this.#positions.has(conversationId)) {
            return; // The user left the conversation: nothing after that is theirs.
          }
        }
        const nextLive = lane.pending[0]?.seq;
        const target = Math.max(lane.backfillTo, nextLive === undefined ? 0 : nextLive - 1);
        if (target <= delivered || !this.#positions.has(conversationId)) {
          break;
        }
        try {
          await this.#backfill(conversationId, target);
          failures = 0;
        } catch (error) {
          if (error instanceof ProblemError && (error.status === 404 || error.status === 403)) {
            // No longer a member: nothing more to deliver.
            this.#forget(conversationId);
            break;
          }
          this.emit("error", { code: "backfill_failed", message: String(error) });
          await sleep(backoffDelay(failures++, this.#options.backoff) + 100);
        }
      }
    } finally {
      lane.running = false;
    }
  }

  /** Pages `GET …/events` from the delivered position up to `target`. */
  async #backfill(conversationId: string, target: number): Promise<void> {
    for (;;) {
      const after = this.#positions.get(conversationId);
      if (after === undefined || after >= target || this.#stopped) {
        return;
      }
      const { data, error, response } = await this.#options.rest.GET("/v1/conversations/{id}/events", {
        params: { path: { id: conversationId }, query: { after_seq: after, limit: 500 } },
      });
      if (response.status === 410) {
        const lastSeq = (await this.#lastSeq(conversationId)) ?? target;
        this.#positions.set(conversationId, Math.max(lastSeq, target));
        this.emit("reset", { conversationId, lastSeq: Math.max(lastSeq, target) });
        return;
      }
      if (!data) {
        throw new ProblemError(response.status, error as never);
      }
      for (const stored of data.items) {
        if (stored.seq === (this.#positions.get(conversationId) ?? 0) + 1) {
          this.#deliver(stored);
        }
      }
      if (!data.has_more && (this.#positions.get(conversationId) ?? 0) < target) {
        // The log ends before `target`: the page raced a newer commit; ask again shortly.
        await sleep(50);
      }
    }
  }

  async #lastSeq(conversationId: string): Promise<number | undefined> {
    const { data } = await this.#options.rest.GET("/v1/conversations/{id}", {
      params: { path: { id: conversationId } },
    });
    return data?.last_seq;
  }

  #deliver(event: Envelope): number {
    this.#positions.set(event.conversation_id, event.seq);
    if (event.type === "message.created") {
      this.#onTyping(event.conversation_id, event.data.author_id, false);
    }
    this.emit("event", event);
    if (event.type === "member.removed" && event.data.user_id === this.userId) {
      this.#forget(event.conversation_id);
    }
    return event.seq;
  }

  #forget(conversationId: string): void {
    this.#positions.delete(conversationId);
    this.#lanes.delete(conversationId);
  }

  // --- typing, token, liveness ---

  #onTyping(conversationId: string, userId: string, typing: boolean): void {
    let users = this.#typingIn.get(conversationId);
    const timer = users?.get(userId);
    if (timer !== undefined) {
      clearTimeout(timer);
      users?.delete(userId);
    } else if (!typing) {
      return;
    }
    if (typing) {
      if (!users) {
        users = new Map();
        this.#typingIn.set(conversationId, users);
      }
      const timeout = this.#hello?.typing_timeout_ms ?? 6000;
      users.set(
        userId,
        setTimeout(() => this.#onTyping(conversationId, userId, false), timeout),
      );
    }
    this.emit("typing", { conversationId, userIds: this.typingIn(conversationId) });
  }

  #scheduleRefresh(expiresAt: string): void {
    clearTimeout(this.#refreshTimer);
    const remaining = Date.parse(expiresAt) - Date.now();
    const ahead = Math.min(this.#options.refreshBeforeMs ?? 60_000, remaining / 2);
    this.#refreshTimer = setTimeout(() => void this.#refresh(), Math.max(0, remaining - ahead));
  }

  async #refresh(): Promise<void> {
    const provider = this.#options.token;
    if (!provider) {
      return;
    }
    try {
      const token = await provider();
      this.#send({ type: "auth", token });
    } catch (error) {
      // The broker closes with 4001 at expiry; the reconnect asks for a token again.
      this.emit("error", { code: "token_failed", message: String(error) });
      this.#refreshTimer = setTimeout(() => void this.#refresh(), 5000);
    }
  }

  #startPings(heartbeatMs: number): void {
    clearInterval(this.#pingTimer);
    const interval = this.#options.pingIntervalMs ?? heartbeatMs;
    const timeout = this.#options.pongTimeoutMs ?? 10_000;
    this.#pingTimer = setInterval(() => {
      if (Date.now() - this.#lastFrameAt > interval + timeout) {
        this.#abandon();
      } else if (this.#send({ type: "ping" })) {
        this.#later(timeout, () => {
          if (Date.now() - this.#lastFrameAt > timeout) {
            this.#abandon();
          }
        });
      }
    }, interval);
  }

  #clearConnectionTimers(): void {
    clearTimeout(this.#refreshTimer);
    clearInterval(this.#pingTimer);
  }

  #later(ms: number, run: () => void): void {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      run();
    }, ms);
    this.#timers.add(timer);
  }

  #setState(state: ConnectionState): void {
    if (this.#state !== state) {
      this.#state = state;
      this.emit("state", state);
    }
  }
}
