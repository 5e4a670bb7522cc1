// The generated types as an app sees them: these lines must compile under `tsc --strict`
// (the build fails otherwise); the runtime assertions only keep the values used.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { Schemas, ServerFrame } from "../src/index.js";

test("fields with defaults are optional and event payloads are typed", () => {
  // `member_ids` has a default: a group needs only its title.
  const group: Schemas["NewGroupConversation"] = { title: "Trip" };
  // `StoredEvent.data` narrows by `type`.
  const stored = {
    id: "e",
    conversation_id: "c",
    seq: 1,
    actor: "u",
    occurred_at: "2026-11-28T00:00:00Z",
    type: "message.created",
    data: { message_id: "m", author_id: "u", body: "hi" },
  } satisfies Schemas["StoredEvent"];
  const event: Schemas["StoredEvent"] = stored;
  const messageId = event.type === "message.created" ? event.data.message_id : undefined;
  // Frames narrow by `type` too, and `Problem.code` is a closed set.
  const frame: ServerFrame = { type: "pong" };
  const code: Schemas["Problem"]["code"] = "history_pruned";
  assert.deepEqual([group.member_ids, messageId, frame.type, code], [undefined, "m", "pong", "history_pruned"]);
});
