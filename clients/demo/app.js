// Parley's demo chat: a plain ES module on @parley/client, no build step. `cargo xtask up`
// serves it with /config.json: the API and broker URLs and the demo users' development tokens.
import { createParley, unwrap } from "@parley/client";

const $ = (selector) => document.querySelector(selector);
const config = await (await fetch("/config.json")).json();
const REACTIONS = ["👍", "❤️", "😂"];

const signedIn = config.users.find((user) => user.id === sessionStorage.getItem("parley-demo-user"));
if (signedIn) {
  start(signedIn);
} else {
  showLogin();
}

function showLogin() {
  $("#login").hidden = false;
  for (const user of config.users) {
    const button = element("button", { type: "button", "data-user": user.name }, `Sign in as ${user.name}`);
    button.onclick = () => {
      sessionStorage.setItem("parley-demo-user", user.id);
      $("#login").hidden = true;
      start(user);
    };
    $("#users").append(button);
  }
}

function start(me) {
  const parley = createParley({ apiUrl: config.apiUrl, brokerUrl: config.brokerUrl, userId: me.id, token: () => me.token });
  const { rest, realtime, store } = parley;
  window.parleyDemo = parley;
  let openId;
  let replyTo;
  let renderQueued = false;

  $("#chat").hidden = false;
  $("#me").textContent = me.name;

  const nameOf = (userId) =>
    config.users.find((user) => user.id === userId)?.name ??
    store.conversations().flatMap((c) => c.members).find((member) => member.user_id === userId)?.display_name ??
    userId.slice(0, 8);
  const others = (conversation) => conversation.members.filter((member) => member.user_id !== me.id);
  const titleOf = (conversation) =>
    conversation.title ?? (others(conversation).map((member) => nameOf(member.user_id)).join(", ") || "Just you");
  // Live presence frames win; until one arrives, the state the API gave with the conversation.
  const isOnline = (member) => (realtime.presenceOf(member.user_id) ?? member.presence).status === "online";

  const render = () => {
    if (!renderQueued) {
      renderQueued = true;
      requestAnimationFrame(() => {
        renderQueued = false;
        renderConversations();
        renderMessages();
      });
    }
  };

  function renderConversations() {
    const list = $("#conversations");
    list.replaceChildren(
      ...store.conversations().map((conversation) => {
        const online = others(conversation).some(isOnline);
        const item = element(
          "li",
          { "data-conversation-id": conversation.id, class: conversation.id === openId ? "active" : "" },
          element("span", { class: `dot${online ? " online" : ""}`, title: online ? "online" : "offline" }),
          element("span", { class: "name" }, titleOf(conversation)),
          conversation.unread_count > 0 ? element("span", { class: "unread" }, String(conversation.unread_count)) : "",
        );
        item.onclick = () => open(conversation.id);
        return item;
      }),
    );
  }

  function renderMessages() {
    const conversation = openId && store.conversation(openId);
    $("#composer").hidden = !conversation;
    if (!conversation) {
      return;
    }
    $("#conversation-title").textContent = titleOf(conversation);
    const messages = store.messages(openId);
    const list = $("#messages");
    const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 20;
    list.replaceChildren(...messages.map((message) => renderMessage(message, messages)));
    if (atBottom) {
      list.scrollTop = list.scrollHeight;
    }
    const typists = realtime.typingIn(openId).map(nameOf);
    $("#typing").textContent = typists.length ? `${typists.join(", ")} ${typists.length > 1 ? "are" : "is"} typing…` : "";
  }

  function renderMessage(message, messages) {
    const mine = message.author_id === me.id;
    const quoted = message.reply_to && messages.find((candidate) => candidate.id === message.reply_to);
    const meta = element("div", { class: "meta" });
    if (message.edited_at && !message.deleted) {
      meta.append(element("span", {}, "edited"));
    }
    if (!message.deleted) {
      meta.append(action("reply", () => startReply(message)));
      if (mine) {
        meta.append(action("edit", () => edit(message)), action("delete", () => remove(message)));
      }
    }
    if (mine) {
      const state = store.receiptState(message);
      meta.append(element("span", { class: `ticks ${state}`, "data-state": state, title: state }, state === "sent" ? "✓" : "✓✓"));
    }
    const reactions = element("div", { class: "reactions" });
    if (!message.deleted) {
      for (const emoji of REACTIONS) {
        const existing = message.reactions.find((reaction) => reaction.emoji === emoji);
        const button = element(
          "button",
          { type: "button", class: existing?.me ? "me" : "", "data-emoji": emoji },
          existing ? `${emoji} ${existing.count}` : emoji,
        );
        button.onclick = () => react(message, emoji, existing?.me);
        reactions.append(button);
      }
    }
    return element(
      "li",
      { class: `message${mine ? " mine" : ""}${message.deleted ? " deleted" : ""}`, "data-id": message.id, "data-seq": message.seq },
      element("div", { class: "author" }, mine ? "You" : nameOf(message.author_id)),
      quoted ? element("div", { class: "quote" }, quoted.text ?? "deleted message") : "",
      element("div", { class: "text" }, message.deleted ? "Message deleted" : message.text ?? ""),
      message.attachment ? element("a", { href: message.attachment.url }, message.attachment.name ?? "attachment") : "",
      reactions,
      meta,
    );
  }

  async function open(conversationId) {
    openId = conversationId;
    replyTo = undefined;
    $("#replying").hidden = true;
    render();
    await store.loadMessages(conversationId);
    markRead();
  }

  /** Tells the others we read the open conversation up to its latest seq (when the tab is visible). */
  function markRead() {
    const conversation = openId && store.conversation(openId);
    if (conversation && document.visibilityState === "visible" && conversation.read_seq < conversation.last_seq) {
      const seq = conversation.last_seq;
      conversation.read_seq = seq;
      conversation.unread_count = 0;
      render();
      void rest.POST("/v1/conversations/{id}/read", { params: { path: { id: openId } }, body: { seq } });
    }
  }

  function startReply(message) {
    replyTo = message;
    $("#replying").hidden = false;
    $("#replying span").textContent = `Replying to: ${message.text ?? ""}`;
    $("#text").focus();
  }

  async function edit(message) {
    const text = prompt("Edit message", message.text ?? "");
    if (text && text !== message.text) {
      const path = { id: message.conversation_id, message_id: message.id };
      await rest.PATCH("/v1/conversations/{id}/messages/{message_id}", { params: { path }, body: { text } });
    }
  }

  async function remove(message) {
    const path = { id: message.conversation_id, message_id: message.id };
    await rest.DELETE("/v1/conversations/{id}/messages/{message_id}", { params: { path } });
  }

  async function react(message, emoji, mineAlready) {
    const path = { id: message.conversation_id, message_id: message.id, emoji };
    const route = "/v1/conversations/{id}/messages/{message_id}/reactions/{emoji}";
    await (mineAlready ? rest.DELETE(route, { params: { path } }) : rest.PUT(route, { params: { path } }));
  }

  $("#text").addEventListener("input", () => openId && realtime.typing(openId));
  $("#cancel-reply").onclick = () => {
    replyTo = undefined;
    $("#replying").hidden = true;
  };
  $("#composer").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = $("#text").value.trim();
    if (!text || !openId) {
      return;
    }
    realtime.stopTyping(openId);
    $("#text").value = "";
    const body = { text, client_message_id: crypto.randomUUID(), ...(replyTo ? { reply_to: replyTo.id } : {}) };
    replyTo = undefined;
    $("#replying").hidden = true;
    await unwrap(rest.POST("/v1/conversations/{id}/messages", { params: { path: { id: openId } }, body }));
  });

  // New direct and group conversations with the other demo users.
  let pickerKind;
  const showPicker = (kind) => {
    pickerKind = kind;
    $("#picker").hidden = false;
    $("#picker-title").hidden = kind === "direct";
    $("#picker-users").replaceChildren(
      ...config.users
        .filter((user) => user.id !== me.id)
        .map((user) =>
          element(
            "label",
            {},
            element("input", { type: kind === "direct" ? "radio" : "checkbox", name: "member", value: user.id }),
            ` ${user.name}`,
          ),
        ),
    );
  };
  $("#new-direct").onclick = () => showPicker("direct");
  $("#new-group").onclick = () => showPicker("group");
  $("#picker-cancel").onclick = () => ($("#picker").hidden = true);
  $("#picker").addEventListener("submit", async (event) => {
    event.preventDefault();
    const chosen = [...document.querySelectorAll("#picker-users input:checked")].map((input) => input.value);
    if (chosen.length === 0) {
      return;
    }
    const body =
      pickerKind === "direct"
        ? { kind: "direct", user_id: chosen[0] }
        : { kind: "group", title: $("#picker-title").value || "New group", member_ids: chosen };
    const conversation = await unwrap(rest.POST("/v1/conversations", { body }));
    $("#picker").hidden = true;
    await store.loadConversations();
    await open(conversation.id);
  });

  // Events: render; acknowledge delivery of others' messages, and read them if on screen.
  store.on("change", render);
  realtime.on("typing", render);
  realtime.on("presence", render);
  realtime.on("state", (state) => {
    $("#connection").textContent = state;
    $("#connection").className = `connection ${state}`;
  });
  realtime.on("event", (event) => {
    if (event.type !== "message.created" || event.data.author_id === me.id) {
      return;
    }
    if (event.conversation_id === openId) {
      queueMicrotask(markRead);
    } else {
      const path = { id: event.conversation_id };
      void rest.POST("/v1/conversations/{id}/delivered", { params: { path }, body: { seq: event.seq } });
    }
  });
  document.addEventListener("visibilitychange", markRead);

  realtime.connect();
  void store.loadConversations();
}

function action(label, run) {
  const button = element("button", { type: "button", "data-action": label }, label);
  button.onclick = run;
  return button;
}

function element(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== "") {
      node.setAttribute(name, value);
    }
  }
  node.append(...children);
  return node;
}
