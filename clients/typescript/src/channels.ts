import type { ChannelPosition, ClientFrame, ServerFrame } from "./generated/protocol.js";
import type { RestClient } from "./rest.js";

/** A subscription token for a `granted` channel, fetched before every (re)subscribe. */
export type ChannelTokenProvider = () => string | Promise<string>;

export interface SubscribeOptions {
  /** For `granted` channels the user's own token does not grant. */
  token?: ChannelTokenProvider;
  /** Resume a durable channel after this position (saved from `channelPositions()`). */
  since?: ChannelPosition;
}

/** One publication, delivered once and (durable channels) in `offset` order. */
export interface ChannelPublication {
  channel: string;
  /** Durable channels only, with the history the offset belongs to. */
  offset?: number;
  epoch?: string;
  data: unknown;
}

type Frame<T extends ServerFrame["type"]> = Extract<ServerFrame, { type: T }>;

interface Subscription {
  options: SubscribeOptions;
  /** Durable channels: the last offset delivered, with its epoch. */
  position?: ChannelPosition;
  /** Frames are handled one after another, a REST backfill included. */
  chain: Promise<void>;
}

export interface ChannelHooks {
  send(frame: ClientFrame): boolean;
  deliver(publication: ChannelPublication): void;
  /** Publications between `from` and `to` are gone for good (history pruned, or another epoch). */
  reset(channel: string, from: number, to: number): void;
  failed(code: string, message: string, channel: string): void;
  rest: RestClient;
}

/**
 * The connection's channel subscriptions, kept across reconnects: each (re)subscribe asks for
 * what was missed since the last delivered offset (`since`), falls back to the REST history
 * when the broker cannot recover it all, and drops what was already delivered.
 */
export class Channels {
  readonly #subscriptions = new Map<string, Subscription>();
  readonly #hooks: ChannelHooks;
  /** The channel an anonymous connection subscribed to with its first frame, before `hello`. */
  #sentFirst: string | undefined;

  constructor(hooks: ChannelHooks) {
    this.#hooks = hooks;
  }

  get size(): number {
    return this.#subscriptions.size;
  }

  add(channel: string, options: SubscribeOptions): void {
    const position = options.since;
    this.#subscriptions.set(channel, { options, ...(position ? { position } : {}), chain: Promise.resolve() });
    void this.subscribe(channel);
  }

  remove(channel: string): void {
    if (this.#subscriptions.delete(channel)) {
      this.#hooks.send({ type: "unsubscribe", channel });
    }
  }

  /** After every `hello`: every subscription again, from where it stopped. */
  resubscribeAll(): void {
    for (const channel of this.#subscriptions.keys()) {
      if (channel !== this.#sentFirst) {
        void this.subscribe(channel);
      }
    }
    this.#sentFirst = undefined;
  }

  /** The first frame of an anonymous connection: a `subscribe` (or a `ping` when there is none). */
  async firstFrame(): Promise<ClientFrame> {
    const [channel] = this.#subscriptions.keys();
    this.#sentFirst = channel;
    return channel ? this.#subscribeFrame(channel) : { type: "ping" };
  }

  positions(): Record<string, ChannelPosition> {
    const positions: Record<string, ChannelPosition> = {};
    for (const [channel, { position }] of this.#subscriptions) {
      if (position) {
        positions[channel] = position;
      }
    }
    return positions;
  }

  async subscribe(channel: string): Promise<void> {
    if (this.#subscriptions.has(channel)) {
      this.#hooks.send(await this.#subscribeFrame(channel));
    }
  }

  async #subscribeFrame(channel: string): Promise<ClientFrame> {
    const subscription = this.#subscriptions.get(channel);
    const token = await subscription?.options.token?.();
    return {
      type: "subscribe",
      channel,
      ...(token ? { token } : {}),
      ...(subscription?.position ? { since: subscription.position } : {}),
    };
  }

  onSubscribed(frame: Frame<"subscribed">): void {
    this.#then(frame.channel, async (subscription) => {
      const since = subscription.position;
      if (frame.offset === undefined || frame.offset === null || frame.epoch === undefined || frame.epoch === null) {
        return; // ephemeral
      }
      const now = { offset: frame.offset, epoch: frame.epoch };
      if (since && frame.recovered) {
        for (const publication of frame.publications ?? []) {
          this.#deliver(subscription, {
            channel: publication.channel,
            ...(publication.offset != null ? { offset: publication.offset } : {}),
            ...(publication.epoch != null ? { epoch: publication.epoch } : {}),
            data: publication.data,
          });
        }
      } else if (since && since.epoch === now.epoch && since.offset < now.offset) {
        await this.#backfill(subscription, frame.channel, now.offset);
      } else if (since && since.offset < now.offset) {
        this.#hooks.reset(frame.channel, since.offset, now.offset);
      }
      subscription.position = { offset: Math.max(now.offset, subscription.position?.offset ?? 0), epoch: now.epoch };
    });
  }

  onPublication(frame: Frame<"publication">): void {
    if (frame.offset === undefined || frame.offset === null) {
      if (this.#subscriptions.has(frame.channel)) {
        this.#hooks.deliver({ channel: frame.channel, data: frame.data });
      }
      return;
    }
    const offset = frame.offset;
    this.#then(frame.channel, async (subscription) => {
      const last = subscription.position?.offset ?? offset - 1;
      if (offset > last + 1 && subscription.position) {
        await this.#backfill(subscription, frame.channel, offset - 1);
      }
      this.#deliver(subscription, {
        channel: frame.channel,
        offset,
        ...(frame.epoch != null ? { epoch: frame.epoch } : {}),
        data: frame.data,
      });
    });
  }

  /** A subscription token expired or was refused: try once more with a fresh one. */
  onError(frame: Frame<"error">): void {
    const channel = frame.channel;
    if (!channel) {
      return;
    }
    this.#hooks.failed(frame.code, frame.message, channel);
    const subscription = this.#subscriptions.get(channel);
    if (frame.code === "token_expired" && subscription?.options.token) {
      void this.subscribe(channel);
    } else if (["forbidden", "unknown_namespace", "bad_channel", "too_many_subscriptions"].includes(frame.code)) {
      this.#subscriptions.delete(channel);
    }
  }

  #then(channel: string, step: (subscription: Subscription) => Promise<void>): void {
    const subscription = this.#subscriptions.get(channel);
    if (!subscription) {
      return;
    }
    subscription.chain = subscription.chain
      .then(() => step(subscription))
      .catch((error: unknown) => this.#hooks.failed("backfill_failed", String(error), channel));
  }

  #deliver(subscription: Subscription, publication: ChannelPublication): void {
    const offset = publication.offset;
    if (offset !== undefined && subscription.position && offset <= subscription.position.offset) {
      return;
    }
    if (offset !== undefined) {
      const epoch = publication.epoch ?? subscription.position?.epoch ?? "";
      subscription.position = { offset, epoch };
    }
    this.#hooks.deliver(publication);
  }

  /** Pages the channel's history from the delivered position up to `to`. */
  async #backfill(subscription: Subscription, channel: string, to: number): Promise<void> {
    while (subscription.position && subscription.position.offset < to) {
      const from = subscription.position.offset;
      const { data, response } = await this.#hooks.rest.GET("/v1/channels/{channel}/publications", {
        params: { path: { channel }, query: { after_offset: from, limit: 500 } },
      });
      if (response.status === 410 || !data || data.items.length === 0) {
        this.#hooks.reset(channel, from, to);
        subscription.position = { ...subscription.position, offset: to };
        return;
      }
      for (const item of data.items) {
        if (item.offset <= to) {
          this.#deliver(subscription, { channel, offset: item.offset, epoch: data.epoch, data: item.data });
        }
      }
    }
  }
}
