// rxstreams chat: plain JavaScript over the documented wire protocol.
// Chat over WebSocket (/ws): subscribe/publish ops; the firehose over SSE (/events/...).
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  nick: null, room: null, cid: Math.random().toString(36).slice(2, 12),
  epoch: null, ws: null, roomSub: null, roomLast: null, refs: 0,
  seen: new Set(), typing: new Map(), rooms: new Map(), stats: new Map(), retry: 500,
};
// What tests (and curious people in the console) can inspect.
window.demo = { firehose: [], sseOpens: 0, state };

// ---------------------------------------------------------------- WebSocket chat
function connect() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/ws?cid=${state.cid}&user=${state.nick}`);
  state.ws = ws;
  ws.onopen = () => {
    state.retry = 500;
    setStatus("live", "ok");
    const since = `${state.epoch}-0`;  // everything retained: the rooms' recent history
    send({ op: "subscribe", id: "rooms", pattern: "room.*.presence", since });
    send({ op: "subscribe", id: "stats", pattern: "stats.rooms" });
    send({ op: "subscribe", id: "me", pattern: `user.${state.nick}.>` });
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
    setTimeout(connect, state.retry);
    state.retry = Math.min(state.retry * 2, 8000);
  };
}

function send(msg) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(msg));
}

function publish(type, data) {
  send({ op: "publish", ref: `p${++state.refs}`, subject: `chat.${state.room}.in`, type,
         data: { user: state.nick, cid: state.cid, ...data } });
}

function control(msg) {
  if (msg.op === "error") showError(msg.message);
}

function enterRoom(room, since) {
  send({ op: "subscribe", id: "room", pattern: `room.${room}.>`, since });
  publish("chat.join", {});
}

function switchRoom(room) {
  if (room === state.room) return;
  if (state.room) {
    publish("chat.leave", {});
    send({ op: "unsubscribe", id: "room" });
  }
  state.room = room;
  state.roomLast = null;
  state.seen.clear();
  state.typing.clear();
  $("messages").replaceChildren();
  $("members").replaceChildren();
  $("member-count").textContent = "0";
  $("room-title").textContent = `#${room}`;
  enterRoom(room, `${state.epoch}-0`);
  renderRooms();
  $("text").focus();
}

// ---------------------------------------------------------------- events
function onEvent(e) {
  const [kind, name, what] = e.subject.split(".");
  if (kind === "room" && what === "presence") {
    state.rooms.set(name, e.data.members.length);
    renderRooms();
  }
  if (kind === "stats") {
    state.stats.set(e.data.room, e.data.per_minute);
    renderRooms();
  }
  if (kind === "user") return showError(e.data.reason);
  if (kind !== "room" || name !== state.room || state.seen.has(e.id)) return;
  state.seen.add(e.id);
  state.roomLast = e.sequence;
  if (what === "msg") {
    state.typing.delete(e.data.user);
    addLine("msg", e.data.user, e.data.text, e.time);
  } else if (what === "presence") {
    addLine("presence", e.data.user, e.data.state === "join" ? "joined" : "left", e.time);
    renderMembers(e.data.members);
  } else if (what === "typing" && e.data.user !== state.nick && Date.now() - Date.parse(e.time) < 4000) {
    state.typing.set(e.data.user, Date.now() + 3000);
  }
  renderTyping();
}

function addLine(kind, user, text, time) {
  const li = document.createElement("li");
  li.className = kind + (user === state.nick ? " mine" : "");
  li.dataset.user = user;
  const when = new Date(time).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (kind === "msg") {
    li.append(el("span", "avatar", user.slice(0, 1).toUpperCase()), el("div", "bubble"));
    li.style.setProperty("--hue", hue(user));
    li.lastChild.append(el("div", "meta", `${user} · ${when}`), el("div", "text", text));
  } else {
    li.append(el("span", "", `${user} ${text} · ${when}`));
  }
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(li);
  while (list.children.length > 200) list.firstChild.remove();
  if (atBottom || user === state.nick) list.scrollTop = list.scrollHeight;
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
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

function renderRooms() {
  const names = new Set(["lobby", ...state.rooms.keys()]);
  if (state.room) names.add(state.room);
  $("rooms").replaceChildren(...[...names].sort().map((name) => {
    const li = el("li", name === state.room ? "active" : "");
    const rate = state.stats.get(name);
    li.append(el("span", "", `#${name}`), el("span", "count", String(state.rooms.get(name) || 0)));
    if (rate) li.title = `${rate.toFixed(0)} messages/min`;
    li.onclick = () => switchRoom(name);
    return li;
  }));
  const rate = state.stats.get(state.room);
  $("room-rate").textContent = rate ? `${rate.toFixed(0)} msg/min` : "";
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
  errorTimer = setTimeout(() => { box.hidden = true; }, 6000);
}

function setStatus(text, kind) {
  $("status").textContent = text;
  $("status").className = `pill pill-${kind}`;
}

// ---------------------------------------------------------------- firehose (SSE)
let source = null;
let perSecond = 0;
function watch(pattern) {
  if (source) source.close();
  $("fire").replaceChildren();
  // EventSource reconnects by itself and sends Last-Event-ID: nothing is missed.
  source = new EventSource(`/events/${encodeURIComponent(pattern)}`);
  source.onopen = () => { window.demo.sseOpens++; $("fire-state").textContent = "live"; };
  source.onerror = () => { $("fire-state").textContent = "reconnecting"; };
  source.onmessage = (m) => {
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
  };
}
setInterval(() => {
  $("rate").firstChild.textContent = String(perSecond);
  perSecond = 0;
  renderTyping();
}, 1000);

// ---------------------------------------------------------------- forms
$("welcome-form").onsubmit = (ev) => {
  ev.preventDefault();
  state.nick = $("nick").value;
  state.room = null;
  $("me").textContent = state.nick;
  $("me").hidden = false;
  $("welcome").hidden = true;
  $("text").disabled = $("send").disabled = false;
  const first = $("first-room").value;
  state.room = first;
  $("room-title").textContent = `#${first}`;
  renderRooms();
  ready.then(connect);
  $("text").focus();
};
$("room-form").onsubmit = (ev) => {
  ev.preventDefault();
  switchRoom($("room-input").value);
  $("room-input").value = "";
};
$("composer").onsubmit = (ev) => {
  ev.preventDefault();
  publish("chat.message", { text: $("text").value });
  $("text").value = "";
};
$("text").oninput = () => publish("chat.typing", {});
$("fire-form").onsubmit = (ev) => { ev.preventDefault(); watch($("fire-pattern").value || ">"); };

const ready = fetch("/healthz").then((r) => r.json()).then((h) => { state.epoch = h.epoch; });
watch(">");
