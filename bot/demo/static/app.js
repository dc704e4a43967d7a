// The demo's messenger page. Plain JS, no build step, nothing fetched from outside 127.0.0.1.
// It acts as people through the fake Bot API's control routes (/_fake/*) and reads what they
// see through /_demo/sync (a long poll over the fake's change counter `seq`).
"use strict";

const S = {
  t: {},
  bot: null,
  personas: [],
  persona: null,
  chats: [],
  messages: new Map(), // chat id -> Map(message_id -> message json from the fake)
  seq: 0,
  clock: null,
  clockVersion: -1,
  current: null, // open chat id
  read: new Map(), // persona id -> Map(chat id -> last read message_id)
  pending: new Map(), // chat id -> ms timestamp: "the bot is answering" after our action
  actionSeen: new Map(), // chat id -> [action, ms timestamp] from the server
  syncToken: 0,
  commands: [],
  rendered: null, // {chat, ids: [message ids in DOM order]}
};

const $ = (id) => document.getElementById(id);
const TZ = "Asia/Shanghai";
const timeFmt = new Intl.DateTimeFormat("zh-CN", { timeZone: TZ, hour: "2-digit", minute: "2-digit", hour12: false });
const DOC_ICON =
  '<svg viewBox="0 0 24 24" width="22" height="22" aria-hidden="true"><path fill="none" stroke="#fff" stroke-width="1.8" ' +
  'stroke-linejoin="round" d="M6 3h8l4 4v14H6z M14 3v4h4"/></svg>';
const partsFmt = new Intl.DateTimeFormat("en-CA", { timeZone: TZ, month: "numeric", day: "numeric", weekday: "short" });
const dateKeyFmt = new Intl.DateTimeFormat("en-CA", { timeZone: TZ, year: "numeric", month: "2-digit", day: "2-digit" });

function t(key, params) {
  let s = S.t[key] ?? key;
  if (params) for (const [k, v] of Object.entries(params)) s = s.split(`{${k}}`).join(String(v));
  return s;
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(`${response.status} ${await response.text()}`);
  return response.json();
}

async function control(path, body) {
  const init = { method: "POST" };
  if (body instanceof FormData) init.body = body;
  else {
    init.body = JSON.stringify(body);
    init.headers = { "Content-Type": "application/json" };
  }
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({ ok: false, description: response.statusText }));
  if (!data.ok) throw new Error(data.description || response.statusText);
  return data.result;
}

// ------------------------------------------------------------------------------ boot

async function boot() {
  const cfg = await getJSON("/_demo/config");
  S.t = cfg.texts;
  S.bot = cfg.bot;
  S.personas = cfg.personas;
  document.title = t("title");
  for (const el of document.querySelectorAll("[data-t]")) el.textContent = t(el.dataset.t);
  $("input").placeholder = t("composer");
  $("persona-search").placeholder = t("persona_search");
  $("attach").title = t("attach");
  $("menu-button").title = t("commands");
  $("advance").textContent = t("advance");
  $("advance").title = t("advance_hint");
  for (const value of [0, 0.5, 1, 2, 4]) {
    const option = document.createElement("option");
    option.value = String(value);
    option.textContent = value === 0 ? t("speed_off") : t("speed_value", { n: value });
    $("speed").append(option);
  }
  showClock(cfg.clock);
  wire();
  const hash = new URLSearchParams(location.hash.slice(1));
  const wanted = Number(hash.get("persona")) || (S.personas[0] && S.personas[0].id);
  await switchPersona(wanted, Number(hash.get("chat")) || null);
}

function wire() {
  $("persona-button").addEventListener("click", togglePersonaPanel);
  $("persona-search").addEventListener("input", renderPersonaList);
  document.addEventListener("click", (event) => {
    if (!event.target.closest(".persona")) $("persona-panel").hidden = true;
    if (!event.target.closest("#command-menu") && event.target.id !== "menu-button") $("command-menu").hidden = true;
    if (!event.target.closest("#attach-menu") && event.target.id !== "attach") $("attach-menu").hidden = true;
  });
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    for (const id of ["persona-panel", "command-menu", "attach-menu"]) $(id).hidden = true;
  });
  $("send").addEventListener("click", () => sendComposer());
  $("input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendComposer();
    } else if (event.key === "Escape") {
      $("command-menu").hidden = true;
    }
  });
  $("input").addEventListener("input", () => {
    autoGrow();
    const value = $("input").value;
    if (value.startsWith("/") && !value.includes(" ")) showCommands(value.slice(1));
    else $("command-menu").hidden = true;
  });
  $("menu-button").addEventListener("click", () => {
    if ($("command-menu").hidden) showCommands("");
    else $("command-menu").hidden = true;
  });
  $("attach").addEventListener("click", () => {
    $("attach-menu").hidden = !$("attach-menu").hidden;
  });
  $("attach-photo").addEventListener("click", () => $("file-photo").click());
  $("attach-file").addEventListener("click", () => $("file-doc").click());
  $("file-photo").addEventListener("change", (event) => uploadChosen(event.target, "photo"));
  $("file-doc").addEventListener("change", (event) => uploadChosen(event.target, "document"));
  $("advance").addEventListener("click", advance);
  $("speed").addEventListener("change", setSpeed);
  $("alert-ok").addEventListener("click", () => ($("alert").hidden = true));
  $("messages").addEventListener("click", onMessagesClick);
  setInterval(tick, 1000);
}

// ------------------------------------------------------------------------------ personas

function roleLabel(p) {
  const role = t(`role.${p.role}`);
  if (p.role === "office") return role;
  if (p.role === "liaison") return `${role} · ${p.department_name}`;
  return `${p.department_name}${p.unit ? " · " + p.unit : ""}`;
}

function colorOf(id) {
  return `c${Math.abs(Number(id)) % 7}`;
}

function avatarInto(el, name, id, isBot) {
  el.textContent = (name || "?").trim().charAt(0);
  el.className = `${el.className.split(" ").filter((c) => c === "avatar" || c === "small").join(" ")} ${isBot ? "bot-avatar" : colorOf(id)}`;
}

function togglePersonaPanel() {
  const panel = $("persona-panel");
  panel.hidden = !panel.hidden;
  if (!panel.hidden) {
    $("persona-search").value = "";
    renderPersonaList();
    $("persona-search").focus();
  }
}

function renderPersonaList() {
  const query = $("persona-search").value.trim();
  const list = $("persona-list");
  list.textContent = "";
  let group = null;
  for (const p of S.personas) {
    const haystack = `${p.name} ${p.department_name} ${p.unit} ${t("role." + p.role)} ${p.expertise}`;
    if (query && !haystack.includes(query)) continue;
    const heading = p.role === "inspector" ? `${t("role.inspector")} · ${p.department_name}` : t(`role.${p.role}`);
    if (heading !== group) {
      group = heading;
      const h = document.createElement("div");
      h.className = "persona-group";
      h.textContent = heading;
      list.append(h);
    }
    const item = document.createElement("button");
    item.type = "button";
    item.className = "persona-item" + (S.persona && p.id === S.persona.id ? " current" : "");
    item.dataset.persona = String(p.id);
    item.setAttribute("role", "option");
    const avatar = document.createElement("span");
    avatar.className = "avatar small";
    avatarInto(avatar, p.name, p.id, false);
    const text = document.createElement("span");
    text.innerHTML = `<div>${esc(p.name)}</div><div class="sub">${esc(roleLabel(p))}${p.expertise ? " · " + esc(p.expertise.replaceAll(";", "、")) : ""}</div>`;
    item.append(avatar, text);
    item.addEventListener("click", () => {
      $("persona-panel").hidden = true;
      switchPersona(p.id, null);
    });
    list.append(item);
  }
}

async function switchPersona(id, chatId) {
  const persona = S.personas.find((p) => p.id === id) || S.personas[0];
  S.persona = persona;
  S.syncToken += 1;
  S.seq = 0;
  S.clockVersion = -1;
  S.messages = new Map();
  S.chats = [];
  S.current = null;
  S.rendered = null;
  if (!S.read.has(persona.id)) S.read.set(persona.id, new Map());
  $("persona-name").textContent = persona.name;
  $("persona-role").textContent = roleLabel(persona);
  avatarInto($("persona-avatar"), persona.name, persona.id, false);
  document.body.dataset.persona = String(persona.id);
  const token = S.syncToken;
  await syncOnce(token, 0);
  openChat(chatId && S.chats.some((c) => c.id === chatId) ? chatId : persona.id);
  syncLoop(token);
}

// ------------------------------------------------------------------------------ sync

async function syncOnce(token, timeout) {
  const p = S.persona;
  const data = await getJSON(`/_demo/sync?user_id=${p.id}&after=${S.seq}&clock=${S.clockVersion}&timeout=${timeout}`);
  if (token !== S.syncToken) return;
  applySync(data);
}

async function syncLoop(token) {
  while (token === S.syncToken) {
    try {
      await syncOnce(token, 25);
      $("offline").hidden = true;
    } catch (error) {
      if (token !== S.syncToken) return;
      $("offline").hidden = false;
      await sleep(1000);
    }
  }
}

function applySync(data) {
  S.seq = data.seq;
  S.clockVersion = data.clock.version;
  showClock(data.clock);
  S.chats = data.chats;
  const touched = new Set();
  for (const m of data.messages) {
    let box = S.messages.get(m.chat_id);
    if (!box) S.messages.set(m.chat_id, (box = new Map()));
    if (m.deleted) box.delete(m.message_id);
    else box.set(m.message_id, m);
    touched.add(m.chat_id);
    if (m.from_bot) S.pending.delete(m.chat_id);
  }
  for (const chat of S.chats) {
    if (chat.action) S.actionSeen.set(chat.id, [chat.action, Date.now()]);
    else S.actionSeen.delete(chat.id);
  }
  if (S.current !== null && touched.has(S.current)) renderMessages(false);
  renderChatList();
  renderHeader();
  markRead();
}

function tick() {
  // Typing indicators end after five seconds, as in Telegram's apps.
  const now = Date.now();
  let changed = false;
  for (const [id, [, at]] of S.actionSeen) {
    if (now - at > 5000) {
      S.actionSeen.delete(id);
      changed = true;
    }
  }
  for (const [id, at] of S.pending) {
    if (now - at > 3000) {
      S.pending.delete(id);
      changed = true;
    }
  }
  if (changed) {
    renderChatList();
    renderHeader();
    renderTyping();
  }
}

function isTyping(chatId) {
  return S.actionSeen.has(chatId) || S.pending.has(chatId);
}

// ------------------------------------------------------------------------------ clock

function showClock(clock) {
  S.clock = clock;
  const weekday = t(`weekday.${clock.weekday}`);
  $("clock").textContent = `${clock.date} ${weekday} ${clock.time}`;
  const kind = $("clock-kind");
  kind.textContent = clock.working ? t("working_day") : t("rest_day");
  kind.classList.toggle("rest", !clock.working);
  const speed = $("speed");
  if (document.activeElement !== speed) speed.value = String(clock.speed);
}

async function advance() {
  const button = $("advance");
  button.disabled = true;
  button.textContent = t("advancing");
  try {
    const response = await fetch("/_demo/advance", { method: "POST" });
    if (!response.ok) throw new Error(await response.text());
    const data = await response.json();
    showClock(data.clock);
    const notices = data.reminders + data.supervisions + data.accountabilities;
    const params = { date: data.clock.date, r: data.reminders, s: data.supervisions, a: data.accountabilities };
    toast(t(notices ? "advanced_notices" : "advanced", params));
  } catch (error) {
    toast(t("failed", { error: error.message }));
  } finally {
    button.disabled = false;
    button.textContent = t("advance");
  }
}

async function setSpeed() {
  const value = Number($("speed").value);
  try {
    const response = await fetch("/_demo/speed", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ speed: value }),
    });
    if (!response.ok) throw new Error(await response.text());
  } catch (error) {
    toast(t("failed", { error: error.message }));
  }
}

// ------------------------------------------------------------------------------ chat list

function chatTitle(chat) {
  return chat.type === "private" ? S.bot.name : chat.title;
}

function lastMessage(chatId) {
  const box = S.messages.get(chatId);
  if (!box || !box.size) return null;
  let last = null;
  for (const m of box.values()) if (!last || m.message_id > last.message_id) last = m;
  return last;
}

function preview(m) {
  const msg = m.message;
  if (m.service) return serviceText(m);
  let body = msg.text ?? msg.caption ?? "";
  if (msg.photo) body = `[${t("photo")}] ${body}`;
  else if (msg.document) body = `[${t("file")}] ${msg.document.file_name || ""} ${body}`;
  body = body.split("\n")[0];
  return body;
}

function senderName(m) {
  if (m.from_bot) return S.bot.name;
  const from = m.message.from;
  if (!from) return "";
  if (S.persona && from.id === S.persona.id) return t("you");
  return [from.first_name, from.last_name].filter(Boolean).join(" ");
}

function unreadCount(chatId) {
  const read = S.read.get(S.persona.id).get(chatId) || 0;
  const box = S.messages.get(chatId);
  if (!box) return 0;
  let n = 0;
  for (const m of box.values()) {
    const from = m.message.from;
    if (m.message_id > read && !m.service && !(from && from.id === S.persona.id)) n += 1;
  }
  return n;
}

function renderChatList() {
  const list = $("chat-list");
  const chats = [...S.chats].sort((a, b) => {
    const la = lastMessage(a.id);
    const lb = lastMessage(b.id);
    if (!la || !lb) return (lb ? 1 : 0) - (la ? 1 : 0) || (a.type === "private" ? -1 : 1);
    return lb.message.date - la.message.date || lb.seq - la.seq;
  });
  list.textContent = "";
  for (const chat of chats) {
    const last = lastMessage(chat.id);
    const item = document.createElement("button");
    item.type = "button";
    item.className = "chat-item" + (chat.id === S.current ? " active" : "");
    item.dataset.chat = String(chat.id);
    const avatar = document.createElement("span");
    avatar.className = "avatar";
    avatarInto(avatar, chatTitle(chat), chat.id, chat.type === "private");
    const unread = chat.id === S.current ? 0 : unreadCount(chat.id);
    const typing = isTyping(chat.id);
    let previewText = typing ? t("typing") : last ? preview(last) : "";
    if (!typing && last && chat.type !== "private" && !last.service) previewText = `${senderName(last)}: ${previewText}`;
    const text = document.createElement("span");
    text.className = "chat-item-text";
    text.innerHTML =
      `<span class="chat-item-top"><span class="chat-name">${esc(chatTitle(chat))}</span>` +
      `<span class="chat-time">${last ? esc(timeFmt.format(new Date(last.message.date * 1000))) : ""}</span></span>` +
      `<span class="chat-item-bottom"><span class="chat-preview${typing ? " typing" : ""}">${esc(previewText)}</span>` +
      (unread ? `<span class="badge${chat.type === "private" ? " hot" : ""}" title="${esc(t("unread"))}">${unread}</span>` : "") +
      `</span>`;
    item.append(avatar, text);
    item.addEventListener("click", () => openChat(chat.id));
    list.append(item);
  }
}

function renderHeader() {
  const chat = S.chats.find((c) => c.id === S.current);
  const status = $("chat-status");
  if (!chat) {
    $("chat-title").textContent = "";
    status.textContent = "";
    $("pinned").hidden = true;
    return;
  }
  $("chat-title").textContent = chatTitle(chat);
  avatarInto($("chat-avatar"), chatTitle(chat), chat.id, chat.type === "private");
  const typing = isTyping(chat.id);
  status.classList.toggle("typing", typing);
  status.textContent = typing ? t("typing") : chat.type === "private" ? t("bot") : t("members", { n: chat.members });
  if (chat.pinned) {
    $("pinned").hidden = false;
    $("pinned-text").textContent = chat.pinned.text;
  } else {
    $("pinned").hidden = true;
  }
}

function openChat(chatId) {
  S.current = chatId;
  S.rendered = null;
  const url = new URLSearchParams({ persona: String(S.persona.id), chat: String(chatId) });
  history.replaceState(null, "", `#${url}`);
  document.body.dataset.chat = String(chatId);
  $("command-menu").hidden = true;
  $("attach-menu").hidden = true;
  renderMessages(true);
  renderChatList();
  renderHeader();
  markRead();
  loadCommands();
}

function markRead() {
  if (S.current === null || !S.persona) return;
  const last = lastMessage(S.current);
  if (last) S.read.get(S.persona.id).set(S.current, last.message_id);
}

// ------------------------------------------------------------------------------ messages

function sortedMessages(chatId) {
  const box = S.messages.get(chatId);
  return box ? [...box.values()].sort((a, b) => a.message_id - b.message_id) : [];
}

function renderMessages(forceBottom) {
  const container = $("messages");
  const nearBottom = container.scrollHeight - container.scrollTop - container.clientHeight < 120;
  const list = sortedMessages(S.current);
  container.textContent = "";
  if (!list.length) {
    const chat = S.chats.find((c) => c.id === S.current);
    if (chat && chat.type === "private") {
      const start = document.createElement("button");
      start.type = "button";
      start.className = "primary start-button";
      start.textContent = t("start");
      start.addEventListener("click", () => sendText("/start"));
      container.append(start);
    } else {
      const empty = document.createElement("div");
      empty.className = "placeholder";
      empty.textContent = t("empty_chat");
      container.append(empty);
    }
  }
  let day = null;
  for (const m of list) {
    const key = dateKeyFmt.format(new Date(m.message.date * 1000));
    if (key !== day) {
      day = key;
      const sep = document.createElement("div");
      sep.className = "day";
      sep.textContent = dayLabel(new Date(m.message.date * 1000));
      container.append(sep);
    }
    container.append(renderMessage(m));
  }
  renderTyping();
  renderReplyKeyboard(list);
  if (forceBottom || nearBottom) container.scrollTop = container.scrollHeight;
}

function dayLabel(when) {
  // "3月2日 周一", from the page's texts (the weekday of the demo's time zone, not the browser's).
  const parts = Object.fromEntries(partsFmt.formatToParts(when).map((p) => [p.type, p.value]));
  const weekday = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].indexOf(parts.weekday) + 1;
  return t("day", { m: Number(parts.month), d: Number(parts.day), w: t(`weekday.${weekday}`) });
}

function renderTyping() {
  const container = $("messages");
  const old = container.querySelector(".typing-bubble");
  const typing = S.current !== null && isTyping(S.current);
  if (typing && !old) {
    const bubble = document.createElement("div");
    bubble.className = "typing-bubble";
    bubble.textContent = `${S.bot.name} ${t("typing")}`;
    container.append(bubble);
    container.scrollTop = container.scrollHeight;
  } else if (!typing && old) {
    old.remove();
  }
}

function serviceText(m) {
  const msg = m.message;
  const who = msg.from ? [msg.from.first_name, msg.from.last_name].filter(Boolean).join(" ") : "";
  if (msg.pinned_message) return t("pinned_service", { name: who });
  if (msg.new_chat_members) return t("joined_service", { name: msg.new_chat_members.map((u) => u.first_name).join("、") });
  if (msg.left_chat_member) return t("left_service", { name: msg.left_chat_member.first_name });
  return t("service");
}

function renderMessage(m) {
  const msg = m.message;
  if (m.service) {
    const el = document.createElement("div");
    el.className = "service-msg";
    el.dataset.mid = String(m.message_id);
    el.textContent = serviceText(m);
    return el;
  }
  const mine = !!(msg.from && S.persona && msg.from.id === S.persona.id);
  const el = document.createElement("div");
  el.className = "msg" + (mine ? " out" : " in") + (m.from_bot ? " from-bot" : "");
  el.dataset.mid = String(m.message_id);
  el.dataset.chat = String(m.chat_id);
  const bubble = document.createElement("div");
  bubble.className = "bubble";
  let html = "";
  const chat = S.chats.find((c) => c.id === m.chat_id);
  if (!mine && chat && chat.type !== "private") {
    const color = m.from_bot ? "bot-avatar" : colorOf(msg.from ? msg.from.id : 0);
    html += `<div class="sender ${color}">${esc(senderName(m))}</div>`;
  }
  if (msg.reply_to_message) {
    const quoted = msg.reply_to_message.text ?? msg.reply_to_message.caption ?? "";
    html += `<div class="quote">${esc(quoted.split("\n")[0])}</div>`;
  }
  if (msg.photo) {
    const file = msg.photo[msg.photo.length - 1];
    html += `<div class="photo"><img alt="" src="/_fake/file?file_id=${encodeURIComponent(file.file_id)}"></div>`;
  }
  if (msg.document) {
    const d = msg.document;
    const href = `/_fake/file?file_id=${encodeURIComponent(d.file_id)}`;
    html +=
      `<div class="doc"><div class="doc-icon">${DOC_ICON}</div><div><div class="doc-name">${esc(d.file_name || t("file"))}</div>` +
      `<div class="doc-size">${esc(size(d.file_size || 0))} · <a href="${href}" download="${esc(d.file_name || "file")}">${esc(t("download"))}</a></div></div></div>`;
  }
  const body = msg.text ?? msg.caption;
  if (body !== undefined) {
    html += `<div class="text">${renderEntities(body, msg.entities ?? msg.caption_entities ?? [])}</div>`;
  }
  const when = timeFmt.format(new Date((msg.edit_date || msg.date) * 1000));
  html += `<span class="meta">${m.edited ? esc(t("edited")) + " " : ""}${esc(when)}</span>`;
  bubble.innerHTML = html;
  el.append(bubble);
  const rows = m.reply_markup && m.reply_markup.inline_keyboard;
  if (rows && rows.length) el.append(renderInlineKeyboard(m, rows));
  return el;
}

function size(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

function renderInlineKeyboard(m, rows) {
  const keyboard = document.createElement("div");
  keyboard.className = "keyboard";
  for (const row of rows) {
    const line = document.createElement("div");
    line.className = "kb-row";
    for (const button of row) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = button.text;
      if (button.callback_data !== undefined) {
        b.addEventListener("click", () => press(m, button.callback_data, b));
      } else if (button.url) {
        b.className = "url";
        b.addEventListener("click", () => followLink(button.url));
      } else {
        b.disabled = true;
      }
      line.append(b);
    }
    keyboard.append(line);
  }
  return keyboard;
}

function renderReplyKeyboard(list) {
  // The latest bot message that sets or removes a reply keyboard decides what is shown.
  const panel = $("reply-keyboard");
  panel.textContent = "";
  panel.hidden = true;
  for (let i = list.length - 1; i >= 0; i -= 1) {
    const markup = list[i].from_bot ? list[i].reply_markup : null;
    if (!markup) continue;
    if (markup.remove_keyboard) return;
    if (!markup.keyboard) continue;
    for (const row of markup.keyboard) {
      const line = document.createElement("div");
      line.className = "kb-row";
      for (const button of row) {
        const label = typeof button === "string" ? button : button.text;
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = label;
        b.addEventListener("click", () => sendText(label));
        line.append(b);
      }
      panel.append(line);
    }
    panel.hidden = false;
    return;
  }
}

// Telegram's entities (UTF-16 offsets, which is how JS indexes strings) to safe HTML.
function renderEntities(text, entities) {
  const list = [...entities].sort((a, b) => a.offset - b.offset || b.length - a.length);
  function build(start, end, items, linked) {
    let out = "";
    let pos = start;
    let i = 0;
    const plain = (s) => (linked ? esc(s) : autoLink(s));
    while (i < items.length) {
      const e = items[i];
      const eStart = Math.max(e.offset, pos);
      const eEnd = Math.min(e.offset + e.length, end);
      const children = [];
      let j = i + 1;
      while (j < items.length && items[j].offset < e.offset + e.length) children.push(items[j++]);
      if (eStart < eEnd) {
        out += plain(text.slice(pos, eStart));
        const inLink = linked || LINKING.has(e.type);
        out += wrap(e, text.slice(eStart, eEnd), build(eStart, eEnd, children, inLink));
        pos = eEnd;
      }
      i = j;
    }
    return out + plain(text.slice(pos, end));
  }
  return build(0, text.length, list, false);
}

// Telegram detects commands and links in every message, the bot's included.
const LINKING = new Set(["text_link", "url", "email", "bot_command", "mention", "code", "pre"]);
const AUTO = /(^|[^\w/])(\/[A-Za-z0-9_]{1,32})(?![\w/])|(https?:\/\/[^\s<>"']+)/g;
function autoLink(s) {
  let out = "";
  let pos = 0;
  for (const m of s.matchAll(AUTO)) {
    if (m[2]) {
      const at = m.index + m[1].length;
      out += esc(s.slice(pos, at)) + `<a class="cmd" data-cmd="${esc(m[2])}">${esc(m[2])}</a>`;
      pos = at + m[2].length;
    } else {
      out += esc(s.slice(pos, m.index)) + `<a href="${esc(m[3])}" data-link="${esc(m[3])}">${esc(m[3])}</a>`;
      pos = m.index + m[3].length;
    }
  }
  return out + esc(s.slice(pos));
}

function wrap(e, raw, inner) {
  switch (e.type) {
    case "bold": return `<b>${inner}</b>`;
    case "italic": return `<i>${inner}</i>`;
    case "underline": return `<u>${inner}</u>`;
    case "strikethrough": return `<s>${inner}</s>`;
    case "spoiler": return `<span class="spoiler">${inner}</span>`;
    case "code": return `<code>${inner}</code>`;
    case "pre": return `<pre><code>${inner}</code></pre>`;
    case "blockquote": return `<blockquote>${inner}</blockquote>`;
    case "expandable_blockquote": return `<blockquote class="expandable">${inner}</blockquote>`;
    case "text_link": return `<a href="${esc(e.url)}" data-link="${esc(e.url)}">${inner}</a>`;
    case "url": return `<a href="${esc(raw)}" data-link="${esc(raw)}">${inner}</a>`;
    case "email": return `<a href="mailto:${esc(raw)}">${inner}</a>`;
    case "bot_command": return `<a class="cmd" data-cmd="${esc(raw)}">${inner}</a>`;
    case "mention": case "hashtag": case "cashtag": case "text_mention": return `<a>${inner}</a>`;
    default: return inner;
  }
}

function onMessagesClick(event) {
  const cmd = event.target.closest("a.cmd");
  if (cmd) {
    event.preventDefault();
    sendText(cmd.dataset.cmd);
    return;
  }
  const link = event.target.closest("a[data-link]");
  if (link) {
    event.preventDefault();
    followLink(link.dataset.link);
    return;
  }
  const spoiler = event.target.closest(".spoiler");
  if (spoiler) spoiler.classList.add("shown");
}

function followLink(url) {
  // Invitation links (t.me/<bot>?start=CODE) open the private chat and send /start CODE,
  // as the Telegram app does; anything else opens in a new tab.
  let parsed = null;
  try {
    parsed = new URL(url);
  } catch (error) {
    return;
  }
  const bot = S.bot.username.toLowerCase();
  if (parsed.hostname === "t.me" && parsed.pathname.slice(1).toLowerCase() === bot) {
    const code = parsed.searchParams.get("start");
    openChat(S.persona.id);
    sendText(code ? `/start ${code}` : "/start");
    toast(t("link_start"));
    return;
  }
  window.open(url, "_blank", "noopener");
}

// ------------------------------------------------------------------------------ acting

function autoGrow() {
  const input = $("input");
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
}

async function sendComposer() {
  const input = $("input");
  const value = input.value;
  if (!value.trim() || S.current === null) return;
  input.value = "";
  autoGrow();
  $("command-menu").hidden = true;
  await sendText(value);
}

async function sendText(text) {
  const chatId = S.current;
  try {
    await control("/_fake/send", { user_id: S.persona.id, chat_id: chatId, text });
    S.pending.set(chatId, Date.now());
    renderTyping();
  } catch (error) {
    toast(t("failed", { error: error.message }));
  }
}

async function press(m, data, button) {
  button.disabled = true;
  try {
    const update = await control("/_fake/press", {
      user_id: S.persona.id,
      chat_id: m.chat_id,
      message_id: m.message_id,
      callback_data: data,
    });
    S.pending.set(m.chat_id, Date.now());
    const answer = await getJSON(`/_fake/callback?id=${encodeURIComponent(update.callback_query.id)}&timeout=10`);
    const result = answer.result && answer.result.answer;
    if (result && result.text) {
      if (result.show_alert) showAlert(result.text);
      else toast(result.text);
    }
    if (result && result.url) followLink(result.url);
  } catch (error) {
    toast(t("failed", { error: error.message }));
  } finally {
    button.disabled = false;
  }
}

async function uploadChosen(input, kind) {
  const file = input.files && input.files[0];
  input.value = "";
  $("attach-menu").hidden = true;
  if (!file || S.current === null) return;
  const caption = $("input").value.trim();
  $("input").value = "";
  autoGrow();
  const form = new FormData();
  form.append("user_id", String(S.persona.id));
  form.append("chat_id", String(S.current));
  form.append("kind", kind);
  if (caption) form.append("caption", caption);
  form.append("file", file, file.name);
  try {
    await control("/_fake/upload", form);
    S.pending.set(S.current, Date.now());
    renderTyping();
  } catch (error) {
    toast(t("failed", { error: error.message }));
  }
}

async function loadCommands() {
  const chatId = S.current;
  try {
    const data = await getJSON(`/_fake/commands?user_id=${S.persona.id}&chat_id=${chatId}`);
    if (chatId === S.current) S.commands = data.result || [];
  } catch (error) {
    S.commands = [];
  }
}

function showCommands(prefix) {
  const menu = $("command-menu");
  menu.textContent = "";
  const found = S.commands.filter((c) => c.command.startsWith(prefix));
  if (!found.length) {
    const empty = document.createElement("div");
    empty.className = "cmd-empty";
    empty.textContent = t("no_commands");
    menu.append(empty);
  }
  for (const c of found) {
    const item = document.createElement("button");
    item.type = "button";
    item.className = "cmd-item";
    item.dataset.cmd = c.command;
    item.innerHTML = `<span class="cmd-name">/${esc(c.command)}</span><span class="cmd-desc">${esc(c.description)}</span>`;
    item.addEventListener("click", () => {
      menu.hidden = true;
      $("input").value = "";
      sendText(`/${c.command}`);
    });
    menu.append(item);
  }
  menu.hidden = false;
}

// ------------------------------------------------------------------------------ notices

let toastTimer = null;
function toast(text) {
  const el = $("toast");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (el.hidden = true), 3000);
}

function showAlert(text) {
  $("alert-text").textContent = text;
  $("alert").hidden = false;
}

boot().catch((error) => {
  document.body.textContent = String(error);
});
