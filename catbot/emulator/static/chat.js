// The emulator's chat page: play a friend DMing the bot (legacy DMs or end-to-end encrypted
// X Chat, switchable per friend) or mentioning it in a public post, watch replies and
// deliveries live. Plain JS, no build step. Live updates come from server-sent events
// (/_emulator/events); messages and mentions go through the control API (POST
// /_emulator/dm, POST /_emulator/xchat, POST /_emulator/mention).
"use strict";

(() => {
  const PREFIX = "/_emulator";
  const MAX_DELIVERIES = 20;
  const $ = (id) => document.getElementById(id);

  const state = {
    bot: { id: "", name: "bot", screen_name: "bot" },
    friends: new Map(), // id -> name
    channels: new Map(), // id -> "dm" | "xchat": how the page writes as that friend
    handles: new Map(), // id -> screen name
    messages: new Map(), // id -> message
    posts: new Map(), // id -> public post
    selected: null,
    deliveries: [],
    maxText: 10000,
    // Whether friends can write to the bot on X Chat (GET /_emulator/xchat).
    xchat: { bot_key_version: null, subscribed: false, reason: null },
  };

  const XCHAT_LABEL = "X Chat, end-to-end encrypted";

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) {
        node.append(child instanceof Node ? child : document.createTextNode(String(child)));
      }
    }
    return node;
  }

  function clock(ms) {
    const date = new Date(Number(ms));
    return isNaN(date) ? "" : date.toLocaleTimeString([], { hour12: false });
  }

  // --- friends ---------------------------------------------------------------------------

  function addFriend(id, name) {
    if (!id || id === state.bot.id) return;
    const known = state.friends.get(id);
    if (known === undefined || (name && known !== name)) {
      state.friends.set(id, name || known || `User ${id}`);
      renderFriends();
    }
  }

  function renderFriends() {
    const list = $("friend-list");
    list.replaceChildren();
    if (state.friends.size === 0) {
      list.append(el("li", { class: "muted", text: "No friends yet: add one below." }));
    }
    for (const [id, name] of state.friends) {
      const onXChat = channelOf(id) === "xchat";
      const button = el("button", {
        type: "button", "data-user-id": id, "aria-pressed": String(id === state.selected),
      }, name, onXChat ? el("span", { class: "lock", role: "img", "aria-label": XCHAT_LABEL,
                                      title: XCHAT_LABEL }) : null,
      el("span", { class: "fid", text: `id ${id}${onXChat ? " · X Chat" : ""}` }));
      button.addEventListener("click", () => select(id));
      list.append(el("li", {}, button));
    }
  }

  function select(id) {
    state.selected = id;
    renderFriends();
    $("send").disabled = false;
    $("post-mention").disabled = false;
    $("channel").disabled = false;
    showChannel();
    renderConversation();
    $("message-text").focus();
  }

  // --- channel: DM or X Chat, per friend -------------------------------------------------

  function channelOf(id) {
    return state.channels.get(id) || "dm";
  }

  function showChannel() {
    const id = state.selected;
    if (id === null) return;
    const channel = channelOf(id);
    for (const radio of document.querySelectorAll('input[name="channel"]')) {
      radio.checked = radio.value === channel;
    }
    const name = state.friends.get(id);
    const how = channel === "xchat" ? "on X Chat (end-to-end encrypted)" : "by DM";
    $("chat-with").textContent = `Chatting as ${name} (id ${id}), ${how}.`;
    $("message-text").placeholder = channel === "xchat"
      ? "Type an X Chat message, e.g. “cat fact please”"
      : "Type a DM, e.g. “cat fact please” or “stop”";
    $("chat").classList.toggle("on-xchat", channel === "xchat");
    showXChatNote();
  }

  // Why X Chat cannot reach the bot yet, next to the switch, while X Chat is chosen.
  function showXChatNote() {
    const note = $("xchat-note");
    const chosen = state.selected !== null && channelOf(state.selected) === "xchat";
    let text = "";
    if (chosen && state.xchat.reason) text = `X Chat cannot send yet: ${state.xchat.reason}.`;
    else if (chosen && !state.xchat.subscribed) {
      text = "No webhook is subscribed to chat.received for the bot: X Chat messages will " +
        "reach nobody (catbot webhooks ensure, with CATBOT_X_API=activity and X Chat on).";
    }
    note.textContent = text;
    note.hidden = !text;
  }

  function setXChat(status) {
    state.xchat = { ...state.xchat, ...status };
    showXChatNote();
  }

  async function refreshXChat() {
    try {
      const answer = await fetch(`${PREFIX}/xchat`);
      if (answer.ok) setXChat(await answer.json());
    } catch (_) { /* the event stream shows the connection state */ }
  }

  function wireChannel() {
    $("channel").addEventListener("change", (event) => {
      if (state.selected === null || event.target.name !== "channel") return;
      state.channels.set(state.selected, event.target.value);
      $("dm-error").textContent = "";
      renderFriends();
      showChannel();
      if (event.target.value === "xchat") refreshXChat();
    });
  }

  // --- conversation ----------------------------------------------------------------------

  function messageItem(m) {
    const fromBot = m.sender_id === state.bot.id;
    const who = fromBot ? state.bot.name : state.friends.get(m.sender_id) || m.sender_id;
    const channel = m.channel || "dm";
    const lock = channel === "xchat"
      ? el("span", { class: "lock", role: "img", "aria-label": XCHAT_LABEL, title: XCHAT_LABEL })
      : null;
    return el("li", { class: `msg ${fromBot ? "out" : "in"} ${channel}`, "data-message-id": m.id,
                      "data-direction": fromBot ? "out" : "in", "data-channel": channel },
      el("span", { class: "who" }, lock, who, channel === "xchat" ? " · X Chat" : null),
      el("span", { class: "text", text: m.text }),
      el("time", { text: clock(m.created_timestamp) }));
  }

  function inConversation(m) {
    return state.selected !== null &&
      (m.sender_id === state.selected || m.recipient_id === state.selected);
  }

  function scrollDown() {
    const log = $("conversation");
    log.scrollTop = log.scrollHeight;
  }

  function renderConversation() {
    const log = $("conversation");
    log.replaceChildren();
    // Oldest first, as recorded: X Chat message ids are the sender's UUIDs, not snowflakes.
    const mine = [...state.messages.values()].filter(inConversation);
    for (const m of mine) log.append(messageItem(m));
    scrollDown();
  }

  function addMessage(m) {
    if (state.messages.has(m.id)) return;
    state.messages.set(m.id, m);
    const friend = m.sender_id === state.bot.id ? m.recipient_id : m.sender_id;
    addFriend(friend);
    if (inConversation(m)) {
      $("conversation").append(messageItem(m));
      scrollDown();
    }
  }

  // --- public posts --------------------------------------------------------------------

  function authorName(id) {
    if (id === state.bot.id) return state.bot.name;
    return state.friends.get(id) || `User ${id}`;
  }

  function postItem(p) {
    const fromBot = p.author_id === state.bot.id;
    const handle = fromBot ? state.bot.screen_name : state.handles.get(p.author_id) || `user${p.author_id}`;
    let context = null;
    if (p.retweeted_status_id) context = "Retweet";
    else if (p.in_reply_to_tweet_id) {
      const parent = state.posts.get(p.in_reply_to_tweet_id);
      context = `Replying to ${parent ? authorName(parent.author_id) : "a post"}`;
    }
    return el("li", { class: `post ${fromBot ? "bot" : "friend"}`, "data-post-id": p.id,
                      "data-author": fromBot ? "bot" : "friend" },
      el("span", { class: "who" }, authorName(p.author_id), " ",
         el("span", { class: "handle", text: `@${handle}` })),
      context ? el("span", { class: "context", text: context }) : null,
      el("span", { class: "text", text: p.text }),
      el("time", { datetime: p.created_at, text: clock(Date.parse(p.created_at)) }));
  }

  function renderPosts() {
    const list = $("posts");
    list.replaceChildren();
    const all = [...state.posts.values()];
    all.sort((a, b) => (BigInt(a.id) < BigInt(b.id) ? -1 : 1));
    for (const p of all) list.append(postItem(p));
    list.scrollTop = list.scrollHeight;
  }

  function addPost(p) {
    if (state.posts.has(p.id)) return;
    state.posts.set(p.id, p);
    if (p.author_id !== state.bot.id) addFriend(p.author_id);
    const list = $("posts");
    list.append(postItem(p));
    list.scrollTop = list.scrollHeight;
  }

  function learnUsers(users) {
    for (const u of users || []) {
      if (u.screen_name) state.handles.set(u.id, u.screen_name);
      addFriend(u.id, u.name);
    }
  }

  // --- webhook state and deliveries ------------------------------------------------------

  function renderWebhooks(hooks) {
    const box = $("webhooks");
    box.replaceChildren();
    if (!hooks.length) {
      box.append(el("p", { class: "muted", text: "No webhook registered." }));
      return;
    }
    for (const h of hooks) {
      const crc = h.last_crc_at
        ? `${h.last_crc_status ?? "no answer"} at ${new Date(h.last_crc_at).toLocaleTimeString([], { hour12: false })}`
        : "none yet";
      const subs = h.subscriptions || [];
      const subText = subs.length
        ? subs.map((s) => `${s.kind === "activity" ? s.event_type + " for " : ""}${s.user_id === state.bot.id ? "the bot, " : ""}user ${s.user_id}`).join(", ")
        : "none";
      box.append(el("div", { class: "hook", "data-webhook-id": h.id },
        el("dl", {},
          el("dt", { text: "URL" }), el("dd", { text: h.url }),
          el("dt", { text: "Valid" }),
          el("dd", { class: h.valid ? "ok" : "bad", "data-field": "valid",
                     text: h.valid ? "✓ valid" : `✗ invalid${h.last_crc_error ? ": " + h.last_crc_error : ""}` }),
          el("dt", { text: "Last CRC" }), el("dd", { text: crc }),
          el("dt", { text: "Subscriptions" }), el("dd", { "data-field": "subscriptions", text: subText }))));
    }
  }

  function renderDeliveries() {
    const body = $("delivery-rows");
    body.replaceChildren();
    if (!state.deliveries.length) {
      body.append(el("tr", {}, el("td", { colspan: "4", class: "muted", text: "None yet." })));
    }
    for (const d of state.deliveries) {
      const ok = d.status !== null && d.status >= 200 && d.status < 300;
      let status = d.status !== null ? String(d.status) : (d.held ? "held" : "failed");
      if (d.duplicate) status += " (dup)";
      const row = el("tr", { class: "delivery" },
        el("td", { class: "num", text: clock(d.at * 1000) }),
        el("td", { class: ok ? "ok" : "bad", title: d.error || "", text: status }),
        el("td", { class: "num", text: d.latency_ms === null || d.latency_ms === undefined ? "—" : `${d.latency_ms} ms` }),
        el("td", { text: describeEvents(d.event_ids || []) }));
      body.append(row);
    }
  }

  function describeEvents(ids) {
    if (!ids.length) return "—";
    const names = ids.map((id) => {
      const p = state.posts.get(id);
      if (p) {
        if (p.author_id === state.bot.id) return "bot's post (echo)";
        return `mention by ${state.friends.get(p.author_id) || p.author_id}`;
      }
      const m = state.messages.get(id);
      if (!m) return "event";
      const kind = m.channel === "xchat" ? "X Chat" : "DM";
      if (m.sender_id === state.bot.id) return `bot's ${kind} (echo)`;
      return `${kind} from ${state.friends.get(m.sender_id) || m.sender_id}`;
    });
    return names.length > 2 ? `${names.length} events` : names.join(", ");
  }

  function addDelivery(d) {
    state.deliveries.unshift(d);
    state.deliveries.length = Math.min(state.deliveries.length, MAX_DELIVERIES);
    renderDeliveries();
  }

  // --- live updates ----------------------------------------------------------------------

  function onSnapshot(data) {
    state.bot = data.bot;
    state.maxText = data.max_text_length || state.maxText;
    $("message-text").maxLength = state.maxText;
    learnUsers(data.users);
    state.messages.clear();
    for (const m of data.messages) addMessage(m);
    state.posts.clear();
    for (const p of data.posts || []) state.posts.set(p.id, p);
    renderPosts();
    if (state.selected === null && state.friends.size) select(state.friends.keys().next().value);
    else renderConversation();
    renderWebhooks(data.webhooks);
    if (data.xchat) setXChat(data.xchat);
    state.deliveries = data.deliveries.slice().reverse();
    renderDeliveries();
  }

  function connect() {
    const badge = $("connection");
    const source = new EventSource(`${PREFIX}/events`);
    const on = (topic, handler) =>
      source.addEventListener(topic, (event) => handler(JSON.parse(event.data)));
    source.addEventListener("open", () => {
      badge.textContent = "Live";
      badge.className = "badge live";
    });
    source.addEventListener("error", () => {
      badge.textContent = "Reconnecting…";
      badge.className = "badge down";
    });
    on("snapshot", onSnapshot);
    on("message", (data) => {
      learnUsers(data.users);
      addMessage(data);
    });
    on("post", (data) => {
      learnUsers(data.users);
      addPost(data);
    });
    on("delivery", addDelivery);
    on("webhooks", (data) => {
      renderWebhooks(data.webhooks);
      refreshXChat(); // a chat.received subscription may have come or gone
    });
    on("xchat", setXChat);
    on("reset", () => {
      state.messages.clear();
      state.posts.clear();
      state.deliveries = [];
      renderPosts();
      renderConversation();
      renderDeliveries();
    });
  }

  // Subscriptions removed through X's routes send no event: refresh now and then.
  async function refreshWebhooks() {
    try {
      const answer = await fetch(`${PREFIX}/webhooks`);
      if (answer.ok) renderWebhooks((await answer.json()).webhooks);
    } catch (_) { /* the event stream shows the connection state */ }
  }

  // --- forms -----------------------------------------------------------------------------

  function wireForms() {
    $("friend-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const id = $("friend-id").value.trim();
      const name = $("friend-name").value.trim();
      const error = $("friend-error");
      if (!/^[0-9]{1,19}$/.test(id)) { error.textContent = "The user id must be 1 to 19 digits."; return; }
      if (id === state.bot.id) { error.textContent = "That id is the bot itself."; return; }
      if (!name || name.length > 50) { error.textContent = "Give a name of 1 to 50 characters."; return; }
      error.textContent = "";
      state.friends.set(id, name);
      $("friend-id").value = "";
      $("friend-name").value = "";
      select(id);
    });

    wireSendForm({
      form: "dm-form", input: "message-text", error: "dm-error", button: "send",
      route: () => channelOf(state.selected), noun: "message",
      unheard: () => (channelOf(state.selected) === "xchat"
        ? "No webhook got this X Chat message (none valid and subscribed to chat.received)."
        : "No webhook got this DM (none valid and subscribed)."),
    });
  }

  // The DM form and the public-post form differ only in their elements, route and words.
  function wireSendForm({ form, input: inputId, error: errorId, button, route, noun, unheard }) {
    $(form).addEventListener("submit", async (event) => {
      event.preventDefault();
      const input = $(inputId);
      const error = $(errorId);
      const text = input.value;
      if (state.selected === null) { error.textContent = "Pick or add a friend first."; return; }
      if (!text.trim()) { error.textContent = `Type a ${noun} first.`; return; }
      error.textContent = "";
      $(button).disabled = true;
      const path = typeof route === "function" ? route() : route;
      try {
        const answer = await fetch(`${PREFIX}/${path}`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({
            sender_id: state.selected, sender_name: state.friends.get(state.selected), text,
          }),
        });
        const data = await answer.json();
        if (!answer.ok) {
          const why = data.error || `the emulator answered HTTP ${answer.status}`;
          // 409: the bot has no X Chat key yet; the note by the switch says so too.
          if (answer.status === 409 && path === "xchat") {
            setXChat({ bot_key_version: null, reason: why });
            error.textContent = `Not sent: ${why}.`;
          } else {
            error.textContent = data.error || `The emulator answered HTTP ${answer.status}.`;
          }
        } else {
          input.value = "";
          const failed = (data.deliveries || []).filter((d) => !d.held && !(d.status >= 200 && d.status < 300));
          if (!(data.deliveries || []).length) {
            error.textContent = typeof unheard === "function" ? unheard() : unheard;
          }
          else if (failed.length) error.textContent = `Delivery failed: ${failed[0].error || "HTTP " + failed[0].status}.`;
        }
      } catch (exc) {
        error.textContent = `Could not reach the emulator: ${exc}`;
      } finally {
        $(button).disabled = false;
        input.focus();
      }
    });
  }

  function wireMentionForm() {
    wireSendForm({
      form: "mention-form", input: "mention-text", error: "mention-error",
      button: "post-mention", route: "mention", noun: "post",
      unheard: "No webhook got this post (none valid and subscribed to mentions).",
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("send").disabled = true;
    $("post-mention").disabled = true;
    wireMentionForm();
    wireChannel();
    renderFriends();
    renderDeliveries();
    wireForms();
    connect();
    setInterval(refreshWebhooks, 5000);
  });
})();
