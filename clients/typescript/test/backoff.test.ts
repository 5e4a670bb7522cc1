import assert from "node:assert/strict";
import { test } from "node:test";
import { CLOSE_CODES, backoffDelay } from "../src/index.js";

test("backoff doubles its ceiling up to the maximum, with full jitter", () => {
  const ceilings = [0, 1, 2, 3, 10].map((attempt) => backoffDelay(attempt, { initialMs: 500, maxMs: 30_000 }, () => 0.999999));
  assert.deepEqual(ceilings, [499, 999, 1999, 3999, 29999]);
  assert.equal(backoffDelay(5, {}, () => 0), 0);
});

test("the close-code table says which codes reconnect", () => {
  const reconnect = Object.entries(CLOSE_CODES).filter(([, code]) => code.reconnect).map(([code]) => Number(code));
  assert.deepEqual(reconnect.sort(), [1012, 4000, 4001, 4002, 4003, 4004]);
  assert.equal(CLOSE_CODES[4100].reconnect, false);
  assert.equal(CLOSE_CODES[1002].reconnect, false);
});
