// The demo chat in headless Chromium (playwright-core driving Debian's chromium) against a
// private stack: run it with `cargo xtask demo-check`, which starts the stack and the demo
// server and sets DEMO_URL, CHROMIUM and SCREENSHOTS.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { chromium } from "playwright-core";

for (const name of ["DEMO_URL", "CHROMIUM", "SCREENSHOTS"]) {
  if (!process.env[name]) {
    throw new Error(`${name} is not set: run this test with \`cargo xtask demo-check\``);
  }
}
const { DEMO_URL, CHROMIUM, SCREENSHOTS } = process.env;
const TIMEOUT = 15_000;

let browser;
let alice;
let bob;
const pageErrors = [];

async function signIn(name) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on("pageerror", (error) => pageErrors.push(`${name}: ${error.message}`));
  await page.goto(DEMO_URL);
  await page.click(`[data-user="${name}"]`);
  await page.waitForSelector("#connection.open");
  return { name, context, page };
}

const messageTexts = (user) => user.page.locator("#messages .message .text").allTextContents();
const shoot = (user, step) => user.page.screenshot({ path: `${SCREENSHOTS}/${step}-${user.name.toLowerCase()}.png` });

before(async () => {
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  alice = await signIn("Alice");
  bob = await signIn("Bob");
});

after(async () => {
  await browser?.close();
});

test("two users exchange messages and see each other typing and the read tick", { timeout: 60_000 }, async () => {
  await alice.page.click("#new-direct");
  await alice.page.check('#picker-users label:has-text("Bob") input');
  await alice.page.click('#picker button[type="submit"]');
  await alice.page.waitForSelector("#composer:not([hidden])");

  await bob.page.click("#conversations li >> nth=0");
  await bob.page.waitForSelector("#composer:not([hidden])");
  await bob.page.waitForSelector("#conversations li .dot.online");

  await alice.page.locator("#text").pressSequentially("Hi Bob", { delay: 40 });
  await bob.page.waitForSelector('#typing:has-text("Alice is typing")');
  await alice.page.press("#text", "Enter");
  await bob.page.waitForSelector('#messages .text:has-text("Hi Bob")');
  await bob.page.waitForSelector('#typing:empty');
  // Bob has the conversation open: his page reads it, and Alice's message shows two blue ticks.
  await alice.page.waitForSelector('.message.mine .ticks[data-state="read"]');

  await bob.page.locator("#text").pressSequentially("Hi Alice", { delay: 40 });
  await alice.page.waitForSelector('#typing:has-text("Bob is typing")');
  await bob.page.press("#text", "Enter");
  await alice.page.waitForSelector('#messages .text:has-text("Hi Alice")');
  await bob.page.waitForSelector('.message.mine .ticks[data-state="read"]');
  await shoot(alice, "1-chat");
  await shoot(bob, "1-chat");
  assert.deepEqual(await messageTexts(alice), ["Hi Bob", "Hi Alice"]);
  assert.deepEqual(await messageTexts(bob), ["Hi Bob", "Hi Alice"]);
});

test("a page that was offline shows the messages sent meanwhile, once each", { timeout: 60_000 }, async () => {
  await bob.context.setOffline(true);
  await bob.page.waitForSelector('#connection:has-text("reconnecting")');
  for (const text of ["while away 1", "while away 2", "while away 3"]) {
    await alice.page.fill("#text", text);
    await alice.page.press("#text", "Enter");
    await alice.page.waitForSelector(`#messages .text:has-text("${text}")`);
  }
  await new Promise((resolve) => setTimeout(resolve, 500));
  assert.deepEqual(await messageTexts(bob), ["Hi Bob", "Hi Alice"], "nothing arrives while offline");
  await shoot(bob, "2-offline");

  await bob.context.setOffline(false);
  await bob.page.waitForSelector("#connection.open");
  await bob.page.waitForSelector('#messages .text:has-text("while away 3")');
  await new Promise((resolve) => setTimeout(resolve, 500));
  await shoot(bob, "3-back-online");
  assert.deepEqual(await messageTexts(bob), ["Hi Bob", "Hi Alice", "while away 1", "while away 2", "while away 3"]);
});

test("a browser's close(1000) ends with wasClean", { timeout: 30_000 }, async () => {
  const closed = await bob.page.evaluate(async () => {
    const config = await (await fetch("/config.json")).json();
    const { token } = config.users.find((user) => user.name === "Bob");
    return new Promise((resolve) => {
      const socket = new WebSocket(config.brokerUrl, ["parley.v1", `parley.bearer.${token}`]);
      socket.onmessage = () => socket.close(1000, "bye");
      socket.onclose = (event) => resolve({ code: event.code, wasClean: event.wasClean });
    });
  });
  assert.deepEqual(closed, { code: 1000, wasClean: true });
});

test("no page threw", () => {
  assert.deepEqual(pageErrors, []);
});
