import { Emitter } from "./emitter.js";
import type { Envelope } from "./generated/protocol.js";
import type { RealtimeClient } from "./realtime.js";
import { type RestClient, type Schemas, unwrap } from "./rest.js";

export type Conversation = Schemas["Conversation"];
export type Message = Schemas["Message"];
export type Member = Schemas["Member"];

/** Whether the other members have the message: for the sender's ticks. */
export type ReceiptState = "sent" | "delivered" | "read";

export type StoreEvents = {
  /** Something in this conversation (or the list, for `undefined`) changed: render again. */
  change: { conversationId: string | undefined };
};

/**
 * Conversations and their messages as a UI renders them, kept current by applying each event
 * the realtime client delivers (exactly once, in order). Load what is on screen with
 * [`loadConversations`](#loadConversations) and [`loadMessages`](#loadMessages); events fill
 * in the rest.
 */
export class ChatStore extends Emitter<StoreEvents> {
  readonly #rest: RestClient;
  readonly #userId: string;
  readonly #conversations = new Map<string, Conversation>();
  readonly #messages = new Map<string, Message[]>();
  readonly #unsubscribe: () => void;

  constructor(options: { rest: RestClient; realtime: RealtimeClient; userId: string }) {
    super();
    this.#rest = options.rest;
    this.#userId = options.userId;
    // Events were pruned past what this client had: reload the conversation's latest messages.
    const offReset = options.realtime.on("reset", ({ conversationId }) => {
      this.loadMessages(conversationId).catch(() => undefined);
    });
    const offEvent = options.realtime.on("event", (event) => this.apply(event));
    this.#unsubscribe = () => {
      offReset();
      offEvent();
    };
  }

  /** Stops applying events. */
  detach(): void {
    this.#unsubscribe();
  }

  get userId(): string {
    return this.#userId;
  }

  /** Every conversation, the most recently active first. */
  conversations(): Conversation[] {
    return [...this.#conversations.values()].sort((a, b) => b.last_activity_at.localeCompare(a.last_activity_at));
  }

  conversation(id: string): Conversation | undefined {
    return this.#conversations.get(id);
  }

  /** The loaded messages of a conversation, oldest first. */
  messages(conversationId: string): Message[] {
    return this.#messages.get(conversationId) ?? [];
  }

  async loadConversations(): Promise<Conversation[]> {
    let cursor: string | undefined;
    do {
      const page = await unwrap(
        this.#rest.GET("/v1/conversations", { params: { query: { limit: 100, ...(cursor ? { cursor } : {}) } } }),
      );
      page.items.forEach((conversation) => this.#conversations.set(conversation.id, conversation));
      cursor = page.next_cursor ?? undefined;
    } while (cursor);
    this.emit("change", { conversationId: undefined });
    return this.conversations();
  }

  /** The latest `limit` messages of a conversation (replacing what was loaded). */
  async loadMessages(conversationId: string, limit = 50): Promise<Message[]> {
    const page = await unwrap(
      this.#rest.GET("/v1/conversations/{id}/messages", {
        params: { path: { id: conversationId }, query: { limit } },
      }),
    );
    this.#messages.set(conversationId, [...page.items].sort((a, b) => a.seq - b.seq));
    this.emit("change", { conversationId });
    return this.messages(conversationId);
  }

  /** Ticks for a message the caller sent: read (or delivered) by every other member. */
  receiptState(message: Message): ReceiptState {
    const others = (this.#conversations.get(message.conversation_id)?.members ?? []).filter(
      (member) => member.user_id !== message.author_id,
    );
    if (others.length > 0 && others.every((member) => member.read_seq >= message.seq)) {
      return "read";
    }
    if (others.length > 0 && others.every((member) => member.delivered_seq >= message.seq)) {
      return "delivered";
    }
    return "sent";
  }

  /** Applies one event (the realtime client calls this for each; exactly once, in order). */
  apply(event: Envelope): void {
    const id = event.conversation_id;
    const conversation = this.#conversations.get(id);
    if (conversation) {
      conversation.last_seq = Math.max(conversation.last_seq, event.seq);
    }
    switch (event.type) {
      case "conversation.created":
      case "member.added":
        if (!conversation) {
          // A failed fetch leaves the conversation out until the next `loadConversations`.
          this.#fetchConversation(id).catch(() => undefined);
        } else if (event.type === "member.added") {
          this.#addMember(conversation, event.data.user_id, event.data.role ?? "member", event.occurred_at);
        }
        break;
      case "conversation.updated":
        if (conversation) {
          conversation.title = event.data.title ?? undefined;
        }
        break;
      case "member.removed":
        if (event.data.user_id === this.#userId) {
          this.#conversations.delete(id);
          this.#messages.delete(id);
        } else if (conversation) {
          conversation.members = conversation.members.filter((member) => member.user_id !== event.data.user_id);
          conversation.member_count = Math.max(0, conversation.member_count - 1);
        }
        break;
      case "message.created": {
        const message: Message = {
          id: event.data.message_id,
          conversation_id: id,
          seq: event.seq,
          author_id: event.data.author_id,
          created_at: event.occurred_at,
          deleted: false,
          reactions: [],
          read_count: 0,
          read_by: [],
          mentions: event.data.mentions ?? [],
          ...(event.data.body != null ? { text: event.data.body } : {}),
          ...(event.data.reply_to != null ? { reply_to: event.data.reply_to } : {}),
          ...(event.data.attachment != null ? { attachment: event.data.attachment as Message["attachment"] } : {}),
          ...(event.data.client_message_id != null ? { client_message_id: event.data.client_message_id } : {}),
        };
        this.#messages.get(id)?.push(message);
        if (conversation) {
          conversation.last_message = message;
          conversation.last_activity_at = event.occurred_at;
          if (message.author_id !== this.#userId) {
            conversation.unread_count += 1;
          }
        }
        break;
      }
      case "message.edited":
        this.#updateMessage(id, event.data.message_id, (message) => {
          message.text = event.data.body ?? undefined;
          message.edited_at = event.data.edited_at;
          message.mentions = event.data.mentions ?? [];
        });
        break;
      case "message.deleted":
        this.#updateMessage(id, event.data.message_id, (message) => {
          message.deleted = true;
          message.deleted_at = event.occurred_at;
          message.reactions = [];
          delete message.text;
          delete message.attachment;
        });
        break;
      case "reaction.added":
      case "reaction.removed": {
        const { emoji, user_id } = event.data;
        const delta = event.type === "reaction.added" ? 1 : -1;
        this.#updateMessage(id, event.data.message_id, (message) => {
          const existing = message.reactions.find((reaction) => reaction.emoji === emoji);
          if (existing) {
            existing.count += delta;
            existing.me = user_id === this.#userId ? delta > 0 : existing.me;
          } else if (delta > 0) {
            message.reactions.push({ emoji, count: 1, me: user_id === this.#userId });
          }
          message.reactions = message.reactions.filter((reaction) => reaction.count > 0);
        });
        break;
      }
      case "receipt.delivered":
      case "receipt.read":
        if (conversation) {
          const field = event.type === "receipt.read" ? "read_seq" : "delivered_seq";
          this.#moveCursors(conversation, event.data.user_id, event.data.seq, field);
        }
        break;
    }
    this.emit("change", { conversationId: id });
  }

  async #fetchConversation(id: string): Promise<void> {
    const { data } = await this.#rest.GET("/v1/conversations/{id}", { params: { path: { id } } });
    if (data) {
      this.#conversations.set(id, data);
      this.emit("change", { conversationId: undefined });
    }
  }

  #addMember(conversation: Conversation, userId: string, role: string, joinedAt: string): void {
    if (conversation.members.some((member) => member.user_id === userId)) {
      return;
    }
    conversation.members.push({
      user_id: userId,
      role: role === "owner" ? "owner" : "member",
      joined_at: joinedAt,
      delivered_seq: 0,
      read_seq: 0,
      presence: { status: "offline" },
    } as Member);
    conversation.member_count += 1;
  }

  /** A read cursor implies the delivered one; the caller's own read cursor resets unread. */
  #moveCursors(conversation: Conversation, userId: string, seq: number, field: "read_seq" | "delivered_seq"): void {
    const member = conversation.members.find((candidate) => candidate.user_id === userId);
    if (member) {
      member.delivered_seq = Math.max(member.delivered_seq, seq);
      if (field === "read_seq") {
        member.read_seq = Math.max(member.read_seq, seq);
      }
    }
    if (userId === this.#userId && field === "read_seq") {
      conversation.read_seq = Math.max(conversation.read_seq, seq);
      const loaded = this.#messages.get(conversation.id);
      conversation.unread_count =
        seq >= conversation.last_seq || !loaded
          ? 0
          : loaded.filter((message) => message.seq > seq && message.author_id !== this.#userId).length;
    }
  }

  #updateMessage(conversationId: string, messageId: string, update: (message: Message) => void): void {
    const message = this.#messages.get(conversationId)?.find((candidate) => candidate.id === messageId);
    if (message) {
      update(message);
    }
    const last = this.#conversations.get(conversationId)?.last_message;
    if (last && last.id === messageId && last !== message) {
      update(last);
    }
  }
}
