// rxstreams chat: plain JavaScript over the documented wire protocol.
// Chat over WebSocket (/ws): subscribe/publish ops; the firehose over SSE (/events/...).
// Each nickname gets a token (POST /demo/token) that the server's auth checks: it allows
// the rooms, the statistics and this person's own notices, and publishing under this name.
"use strict";

const $ = (id) => document.getElementById(id);
const GROUP_MS = 5 * 60 * 1000;  // consecutive messages of one person within this are grouped
const state = {
  nick: null, room: null, cid: Math.random().toString(36).slice(2, 12),
  epoch: null, ws: null, opened: false, token: null, allowed: [">"], refs: 0,
  seen: new Set(), typing: new Map(), rooms: new Map(), stats: new Map(), unread: new Map(),
  pending: new Map(), retry: 500, roomLast: null,
  roomTtl: 120000,  // an empty room leaves the list after this long without activity
};
// What tests (and curious people in the console) can inspect.
window.demo = { firehose: [], sseOpens: 0, state };

// ---------------------------------------------------------------- token
async function getToken() {
  const resp = await fetch("/demo/token", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ nick: state.nick }),
  });
  if (resp.status === 404) {  // the demo runs without tokens: everything is allowed
    state.token = null;
    state.allowed = [">"];
    return;
  }
  const body = await resp.json();
  if (!resp.ok) throw new Error(body.error ? body.error.message : `HTTP ${resp.status}`);
  state.token = body.token;
  state.allowed = body.subscribe;
}

function withToken(url) {
  if (!state.token) return url;
  return `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(state.token)}`;
}

// ---------------------------------------------------------------- WebSocket chat
function connect() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(withToken(`${proto}://${location.host}/ws?cid=${state.cid}&user=${state.nick}`));
  state.ws = ws;
  state.opened = false;
  ws.onopen = () => {
    state.opened = true;
    state.retry = 500;
    setStatus("live", "ok");
    const since = `${state.epoch}-0`;  // everything retained: the rooms' recent history
    send({ op: "subscribe", id: "rooms", pattern: "room.*.presence", since });
    send({ op: "subscribe", id: "stats", pattern: "stats.rooms" });
    send({ op: "subscribe", id: "me", pattern: `user.${state.nick}.>` });
    send({ op: "subscribe", id: "unread", pattern: "room.*.msg" });
    if (state.room) enterRoom(state.room, state.roomLast || since);
  };
  ws.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    for (const item of Array.isArray(msg) ? msg : [msg]) {
      if (item.op) control(item); else onEvent(item);
    }
  };
  ws.onclose = () => {
    setStatus("reconnecting", "wait");
    for (const mid of state.pending.keys()) {
      const li = state.pending.get(mid);
      if (li.dataset.state === "sending") refuse(mid, "Not sent: the connection dropped");
    }
    // a handshake refused (an expired token, say) gets a fresh token before the next try
    const renew = state.opened ? Promise.resolve() : getToken().catch(() => {});
    setTimeout(() => renew.then(connect), state.retry);
    state.retry = Math.min(state.retry * 2, 8000);
  };
}

function send(msg) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return false;
  state.ws.send(JSON.stringify(msg));
  return true;
}

function publish(type, data, ref) {
  return send({ op: "publish", ref: ref || `p${++state.refs}`,
                subject: `chat.${state.room}.in.${state.nick}`, type,
                data: { cid: state.cid, ...data } });
}

function control(msg) {
  const li = msg.ref && state.pending.get(msg.ref);
  if (msg.op === "ack" && li) {
    if (li.dataset.state === "sending") setDelivery(li, "sent");
  } else if (msg.op === "error" && li) {
    refuse(msg.ref, msg.message);
  } else if (msg.op === "error" && !(msg.ref && msg.ref.startsWith("p"))) {
    showError(msg.message);
  }
}

function enterRoom(room, since) {
  send({ op: "subscribe", id: "room", pattern: `room.${room}.>`, since });
  publish("chat.join", {});
}

function switchRoom(room) {
  setView("chat");
  if (room === state.room) return;
  if (state.room) {
    publish("chat.leave", {});
    send({ op: "unsubscribe", id: "room" });
  }
  state.room = room;
  state.roomLast = null;
  state.seen.clear();
  state.typing.clear();
  state.pending.clear();
  state.unread.delete(room);
  $("messages").replaceChildren();
  $("members").replaceChildren();
  $("member-count").textContent = "0";
  $("room-title").textContent = `#${room}`;
  enterRoom(room, `${state.epoch}-0`);
  renderRooms();
  $("text").focus();
}

// ---------------------------------------------------------------- events
function touchRoom(name, time, members) {
  const room = state.rooms.get(name) || { members: 0, active: 0 };
  if (members !== undefined) room.members = members;
  room.active = Math.max(room.active, Date.parse(time) || 0);
  state.rooms.set(name, room);
}

function onEvent(e) {
  const [kind, name, what] = e.subject.split(".");
  if (kind === "room" && what === "presence") touchRoom(name, e.time, e.data.members.length);
  if (kind === "room" && what === "msg") touchRoom(name, e.time);
  if (kind === "stats") state.stats.set(e.data.room, e.data.per_minute);
  if (kind === "user") return onRejected(e.data);
  if (kind === "room" && what === "msg" && name !== state.room && !state.seen.has(e.id)) {
    state.seen.add(e.id);
    state.unread.set(name, (state.unread.get(name) || 0) + 1);
  }
  renderRooms();
  if (kind !== "room" || name !== state.room || state.seen.has(e.id)) return;
  state.seen.add(e.id);
  state.roomLast = e.sequence;
  if (what === "msg") {
    state.typing.delete(e.data.user);
    onMessage(e);
  } else if (what === "presence") {
    addNotice(e.data.user, e.data.state === "join" ? "joined" : "left", e.time);
    renderMembers(e.data.members);
  } else if (what === "typing" && e.data.user !== state.nick && Date.now() - Date.parse(e.time) < 4000) {
    state.typing.set(e.data.user, Date.now() + 3000);
  }
  renderTyping();
}

function onMessage(e) {
  const mine = e.data.user === state.nick && e.data.mid && state.pending.get(e.data.mid);
  if (mine) {  // our own message came back from the pipeline: it is in the room now
    state.pending.delete(e.data.mid);
    setDelivery(mine, "sent");
    mine.dataset.time = e.time;
    mine.dataset.seq = e.sequence;
    appendLine(mine);
  } else {
    appendLine(messageLine(e.data.user, e.data.text, e.time));
  }
}

function onRejected(data) {
  if (data.mid && state.pending.has(data.mid)) refuse(data.mid, data.reason);
  else showError(data.reason);
}

// ---------------------------------------------------------------- rendering the room
function messageLine(user, text, time) {
  const li = el("li", "msg" + (user === state.nick ? " mine" : ""));
  li.dataset.user = user;
  li.dataset.time = time;
  li.style.setProperty("--hue", hue(user));
  const meta = el("div", "meta");
  meta.append(el("span", "who", user), el("span", "when", clock(time)));
  const bubble = el("div", "bubble");
  bubble.append(meta, el("div", "text", text));
  li.append(el("span", "avatar", user.slice(0, 1).toUpperCase()), bubble);
  return li;
}

function addNotice(user, text, time) {
  const li = el("li", "presence");
  li.dataset.user = user;
  li.append(el("span", "", `${user} ${text} · ${clock(time)}`));
  appendLine(li);
}

function appendLine(li) {
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  // pending messages stay last: what the room confirmed goes before them
  const firstPending = [...list.children].find((n) => n !== li && n.dataset.state === "sending");
  if (firstPending && li.dataset.state !== "sending") list.insertBefore(li, firstPending);
  else list.append(li);
  while (list.children.length > 200) list.firstChild.remove();
  regroup(list);
  markLatest();
  if (atBottom || li.dataset.user === state.nick) list.scrollTop = list.scrollHeight;
}

// Consecutive messages from one person (within GROUP_MS) share one avatar and name.
function regroup(list) {
  let prev = null;
  for (const li of list.children) {
    const follows = prev && li.classList.contains("msg") && prev.classList.contains("msg")
      && !li.classList.contains("refused") && !prev.classList.contains("refused")
      && prev.dataset.user === li.dataset.user
      && Math.abs(Date.parse(li.dataset.time) - Date.parse(prev.dataset.time)) < GROUP_MS;
    li.classList.toggle("cont", Boolean(follows));
    prev = li;
  }
}

function setDelivery(li, what, reason) {
  li.dataset.state = what;
  li.classList.toggle("refused", what === "refused");
  let tag = li.querySelector(".state");
  if (!tag) {
    tag = el("div", "state");
    li.querySelector(".bubble").after(tag);
  }
  tag.textContent = what === "sending" ? "sending…" : what === "sent" ? "sent ✓"
    : `refused: ${reason} · tap to edit`;
  markLatest();
}

// "sent ✓" shows under my latest sent message only.
function markLatest() {
  const sent = document.querySelectorAll("#messages li.mine[data-state=sent]");
  sent.forEach((li, i) => li.classList.toggle("latest", i === sent.length - 1));
}

function refuse(mid, reason) {
  const li = state.pending.get(mid);
  if (!li) return;
  state.pending.delete(mid);
  setDelivery(li, "refused", reason);
  li.title = "Put this text back in the composer";
  li.onclick = () => { $("text").value = li.querySelector(".text").textContent; li.remove(); $("text").focus(); };
  appendLine(li);
}

function sendMessage(text) {
  const mid = `${state.cid}-${++state.refs}`;
  const li = messageLine(state.nick, text.trim(), new Date().toISOString());
  li.dataset.mid = mid;
  setDelivery(li, "sending");
  state.pending.set(mid, li);
  appendLine(li);
  if (!publish("chat.message", { text, mid }, mid)) refuse(mid, "Not connected: try again in a moment");
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function clock(time) {
  return new Date(time).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function hue(name) {
  let h = 0;
  for (const c of name) h = (h * 31 + c.charCodeAt(0)) % 360;
  return h;
}

function renderMembers(members) {
  $("members").replaceChildren(...members.map((m) => {
    const li = el("li", m === state.nick ? "mine" : "", m);
    li.style.setProperty("--hue", hue(m));
    return li;
  }));
  $("member-count").textContent = String(members.length);
}

function visibleRooms() {
  const now = Date.now();
  const names = new Set(["lobby"]);
  if (state.room) names.add(state.room);
  for (const [name, room] of state.rooms) {
    if (room.members > 0 || state.unread.get(name) || now - room.active < state.roomTtl) names.add(name);
  }
  return [...names].sort();
}

let roomsDrawn = "";
function renderRooms() {
  const names = visibleRooms();
  const drawn = JSON.stringify(names.map((n) => [n, n === state.room, state.unread.get(n),
    (state.rooms.get(n) || {}).members, state.stats.get(n)]));
  if (drawn === roomsDrawn) return;  // redraw only what changed: clicks land on stable rows
  roomsDrawn = drawn;
  let unread = 0;
  $("rooms").replaceChildren(...names.map((name) => {
    const li = el("li", name === state.room ? "active" : "");
    li.dataset.room = name;
    const rate = state.stats.get(name);
    const n = state.unread.get(name) || 0;
    unread += n;
    li.append(el("span", "name", `#${name}`));
    if (n) li.append(el("span", "unread", String(n)));
    const members = (state.rooms.get(name) || { members: 0 }).members;
    li.append(el("span", "count", String(members)));
    li.title = `${members} present` + (rate ? ` · ${rate.toFixed(0)} messages/min` : "");
    li.onclick = () => switchRoom(name);
    return li;
  }));
  const rate = state.stats.get(state.room);
  $("room-rate").textContent = rate ? `${rate.toFixed(0)} msg/min` : "";
  const badge = $("tab-unread");
  badge.textContent = String(unread);
  badge.hidden = unread === 0;
}

function renderTyping() {
  const now = Date.now();
  const who = [...state.typing].filter(([, until]) => until > now).map(([u]) => u);
  $("typing").textContent = who.length ? `${who.join(", ")} ${who.length > 1 ? "are" : "is"} typing…` : "";
}

let errorTimer = null;
function showError(text) {
  const box = $("error");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(errorTimer);
  errorTimer = setTimeout(() => { box.hidden = true; }, 8000);
}

function setStatus(text, kind) {
  $("status").textContent = text;
  $("status").className = `pill pill-${kind}`;
}

// ---------------------------------------------------------------- phone layout: one panel at a time
function setView(view) {
  document.body.dataset.view = view;
  for (const b of document.querySelectorAll(".tabs button")) {
    b.setAttribute("aria-selected", String(b.dataset.view === view));
  }
}
for (const b of document.querySelectorAll(".tabs button")) b.onclick = () => setView(b.dataset.view);

// ---------------------------------------------------------------- firehose (SSE)
// ">" means everything this token allows: one EventSource per allowed pattern.
let sources = [];
let perSecond = 0;
function watch(pattern) {
  for (const s of sources) s.close();
  $("fire").replaceChildren();
  const patterns = pattern === ">" ? state.allowed : [pattern];
  $("fire-allowed").textContent = state.token ? `your token allows ${state.allowed.join("  ")}` : "";
  // EventSource reconnects by itself and sends Last-Event-ID: nothing is missed.
  sources = patterns.map((p) => {
    const source = new EventSource(withToken(`/events/${encodeURIComponent(p)}`));
    source.onopen = () => { window.demo.sseOpens++; fireState(); };
    source.onerror = () => fireState(p);
    source.onmessage = onFire;
    return source;
  });
  fireState();
}

function fireState(failed) {
  const closed = sources.some((s) => s.readyState === EventSource.CLOSED);
  const open = sources.filter((s) => s.readyState === EventSource.OPEN).length;
  let text = open === sources.length ? `live · ${open} stream${open > 1 ? "s" : ""}` : "connecting";
  if (closed && failed) text = `refused: your token does not allow ${failed}`;
  else if (failed) text = "reconnecting";
  $("fire-state").textContent = text;
}

function onFire(m) {
  const e = JSON.parse(m.data);
  window.demo.firehose.push(m.lastEventId);
  perSecond++;
  const li = el("li");
  li.dataset.id = m.lastEventId;
  li.append(el("span", "subj", e.subject), el("span", "type", e.type),
            el("code", "", JSON.stringify(e.data)));
  const list = $("fire");
  list.prepend(li);
  while (list.children.length > 150) list.lastChild.remove();
  $("fire-total").textContent = String(window.demo.firehose.length);
}

setInterval(() => {
  $("rate").firstChild.textContent = String(perSecond);
  perSecond = 0;
  renderTyping();
  if (state.nick) renderRooms();  // empty rooms age out of the list
}, 1000);

// ---------------------------------------------------------------- forms
$("welcome-form").onsubmit = async (ev) => {
  ev.preventDefault();
  state.nick = $("nick").value;
  $("enter").disabled = true;
  try {
    await ready;
    await getToken();
  } catch (err) {
    $("welcome-error").textContent = `Cannot enter: ${err.message}`;
    $("welcome-error").hidden = false;
    $("enter").disabled = false;
    return;
  }
  $("me").textContent = state.nick;
  $("me").hidden = false;
  $("welcome").hidden = true;
  $("text").disabled = $("send").disabled = false;
  state.room = $("first-room").value;
  $("room-title").textContent = `#${state.room}`;
  renderRooms();
  connect();
  watch($("fire-pattern").value || ">");
  $("text").focus();
};
$("room-form").onsubmit = (ev) => {
  ev.preventDefault();
  switchRoom($("room-input").value);
  $("room-input").value = "";
};
$("composer").onsubmit = (ev) => {
  ev.preventDefault();
  const text = $("text").value;
  $("text").value = "";
  sendMessage(text);
};
$("text").oninput = () => publish("chat.typing", {});
$("fire-form").onsubmit = (ev) => {
  ev.preventDefault();
  if (state.nick) watch($("fire-pattern").value || ">");
};

const ready = fetch("/healthz").then((r) => r.json()).then((h) => { state.epoch = h.epoch; });
setView("chat");
