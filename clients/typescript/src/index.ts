/**
 * `@parley/client`: Parley's TypeScript SDK.
 *
 * - [`createRestClient`]: every REST operation, typed from `openapi.json` (openapi-fetch).
 * - [`RealtimeClient`]: the WebSocket with resume, reconnects, token refresh, typing, presence.
 * - [`ChatStore`]: conversations and messages kept current from the events.
 * - [`createParley`]: the three wired together for one user.
 */
export { type BackoffOptions, backoffDelay } from "./backoff.js";
export type { ChannelPublication, ChannelTokenProvider, SubscribeOptions } from "./channels.js";
export { CLOSE_CODES, type BrokerCloseCode } from "./generated/closeCodes.js";
export type { components, operations, paths } from "./generated/openapi.js";
export type * from "./generated/protocol.js";
export {
  type CloseInfo,
  type ConnectionState,
  type NotificationChange,
  type PresenceState,
  RealtimeClient,
  type RealtimeEvents,
  type RealtimeOptions,
  type TypingChange,
  type WebSocketConstructor,
  type WebSocketLike,
} from "./realtime.js";
export {
  createRestClient,
  type Problem,
  ProblemError,
  type RestClient,
  type RestOptions,
  type Schemas,
  type TokenProvider,
  unwrap,
} from "./rest.js";
export { ChatStore, type Conversation, type Member, type Message, type ReceiptState, type StoreEvents } from "./store.js";

import { RealtimeClient, type RealtimeOptions } from "./realtime.js";
import { createRestClient, type RestClient, type TokenProvider } from "./rest.js";
import { ChatStore } from "./store.js";

export interface ParleyOptions extends Omit<RealtimeOptions, "url" | "rest" | "token"> {
  /** The API's base URL, e.g. `http://127.0.0.1:8080`. */
  apiUrl: string;
  /** The broker's WebSocket URL, e.g. `ws://127.0.0.1:8081/ws`. */
  brokerUrl: string;
  token: TokenProvider;
  /** The signed-in user (the token's `sub`). */
  userId: string;
}

export interface Parley {
  rest: RestClient;
  realtime: RealtimeClient;
  store: ChatStore;
}

/** A REST client, a realtime client and a store for one user; call `realtime.connect()`. */
export function createParley(options: ParleyOptions): Parley {
  const { apiUrl, brokerUrl, token, userId, ...realtimeOptions } = options;
  const rest = createRestClient({ baseUrl: apiUrl, token });
  const realtime = new RealtimeClient({ ...realtimeOptions, url: brokerUrl, rest, token });
  const store = new ChatStore({ rest, realtime, userId });
  return { rest, realtime, store };
}
