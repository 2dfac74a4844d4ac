"""The chat pipeline: raw client input in, accepted messages, presence and stats out.

Browsers never publish to a room directly. They publish to an *inbound* subject; this
pipeline consumes every inbound event, decides what happens to it and publishes the
results, so the server needs no chat-specific hooks. Subject layout:

====================================  ==============================================
``chat.<room>.in.<nick>``             client input: ``chat.message``, ``chat.typing``,
                                      ``chat.join``, ``chat.leave`` (``data.text``,
                                      ``data.cid``, ``data.mid``); the sender is the
                                      subject's last token, which a token can pin
                                      (``chat.<room>.in`` with ``data.user`` also works)
``presence.conn``                     connection events from the server
                                      (``demo.conn.open`` / ``demo.conn.closed``)
``room.<room>.msg``                   accepted messages (the room's history), with
                                      the sender's ``mid`` so the page can match them
``room.<room>.typing``                throttled "is typing" signals
``room.<room>.presence``              join/leave with the room's member list
``user.<nick>.rejected``              why a message of ``nick`` (``mid``) was refused
``stats.rooms``                       messages per room per minute (sliding window)
====================================  ==============================================

Stages, each with the operator family that does the job:

1. **Routing by kind** -- ``route(kind)`` splits the inbound stream into message, typing
   and presence branches; every output is published to its room's subject.
2. **Filtering** -- ``select`` parses, ``route(verdict)`` sends empty or oversized
   messages (and bad nicknames) to the rejected branch, published to the sender.
3. **Flood control** -- ``dedupe`` drops a user's repeated message within
   ``repeat_ttl``; per user (``group_by_key``) a ``rate_limit`` token bucket refuses
   messages above ``rate`` per second; both tell the sender through ``on_drop``.
4. **Typing indicators** -- per (room, user) group, ``throttle(latest=True)`` passes
   the first keystroke signal at once, then at most one per ``typing_every`` seconds
   (the latest), however fast the user types.
5. **Batched delivery** -- ``batch_by_key(room)`` collects a burst of accepted messages
   per room and hands it to the broker at once (one dispatch, one frame per client).
6. **Presence** -- ``select(Presence.apply)`` folds joins, leaves and *connection
   closed* events into room membership: closing a tab leaves its rooms.
7. **Windowed statistics** -- ``broadcast`` shares accepted messages with a
   ``sliding(60, step)`` window keyed by room, counted by ``count_of()``.

Everything time-based takes ``scheduler=``, so tests drive it in virtual time.

>>> from reactivex import Subject
>>> from streams import Event
>>> inbound, out = Subject(), []
>>> _ = build_pipeline(inbound, lambda subject, type, items: out.append((subject, items)))
>>> inbound.on_next(Event.create({"user": "ada", "text": ""}, subject="chat.lobby.in",
...                              type="chat.message"))
>>> out
[('user.ada.rejected', [{'room': 'lobby', 'text': '', 'reason': 'Message is empty'}])]
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import reactivex
from reactivex import Observable, abc
from reactivex import operators as ops
from reactivex.disposable import CompositeDisposable

from operators import (
    Branches,
    Group,
    Window,
    batch_by_key,
    broadcast,
    count_of,
    dedupe,
    group_by_key,
    rate_limit,
    route,
    select,
    sliding,
    throttle,
    where,
)
from operators.state import register
from streams import Event

__all__ = ["Change", "Message", "Presence", "Rules", "Send", "build_pipeline", "parse_input"]

Send = Callable[[str, str, list[Any]], None]
"""Where results go: ``send(subject, type, items)`` publishes ``items`` (event data) in order."""

NAME = re.compile(r"[A-Za-z0-9_-]{1,24}")
KINDS = {"chat.message": "message", "chat.typing": "typing", "chat.join": "presence"}
KINDS |= {"chat.leave": "presence", "demo.conn.open": "presence", "demo.conn.closed": "presence"}


@dataclass(frozen=True)
class Rules:
    """The chat's policy knobs (defaults are what ``rxstreams demo`` runs with)."""

    max_length: int = 500  # characters per message
    rate: float = 1.0  # messages per second per user, sustained ...
    burst: int = 5  # ... with bursts up to this many
    repeat_ttl: float = 30.0  # the same text from the same user is dropped for this long
    typing_every: float = 2.0  # at most one typing signal per user and room per period
    batch_within: float = 0.01  # seconds the rest of a burst may wait to travel together
    stats_window: float = 60.0  # messages per room per minute ...
    stats_step: float = 10.0  # ... updated this often


class Message(NamedTuple):
    """One parsed inbound event (``text`` is ``None`` for presence and typing)."""

    kind: str
    room: str
    user: str
    text: str | None = None
    cid: str | None = None
    mid: str | None = None  # the sender's message id, echoed on delivery or refusal


def parse_input(event: Event) -> Message:
    """Turn an inbound event into a :class:`Message`; raises ``ValueError`` if malformed.

    On ``chat.<room>.in.<nick>`` the sender is ``nick`` (a token allowing only that subject
    proves it); ``data.user``, if given, must agree.

    >>> parse_input(Event.create({"text": "hi", "mid": "m1"}, subject="chat.lobby.in.ada",
    ...                          type="chat.message"))
    Message(kind='chat.message', room='lobby', user='ada', text='hi', cid=None, mid='m1')
    """
    data = event.data
    if not isinstance(data, dict):
        raise ValueError("data must be an object")
    user, text, cid, mid = data.get("user"), data.get("text"), data.get("cid"), data.get("mid")
    tokens = (event.subject or "").split(".")
    inbound = len(tokens) in (3, 4) and tokens[0] == "chat" and tokens[2] == "in"
    room = tokens[1] if inbound else ""
    if inbound and len(tokens) == 4:
        if user is not None and user != tokens[3]:
            raise ValueError("data.user differs from the sender in the subject")
        user = tokens[3]
    if not isinstance(user, str) or not isinstance(cid, str | None):
        raise ValueError("user must be a string")
    if not isinstance(mid, str | None):
        raise ValueError("mid must be a string")
    if event.type == "chat.message" and not isinstance(text, str):
        raise ValueError("text must be a string")
    return Message(event.type, room, user, text.strip() if text is not None else None, cid, mid)


def verdict(m: Message, rules: Rules) -> str | None:
    """Why a message is refused, or ``None`` when it may pass."""
    if not NAME.fullmatch(m.user) or not NAME.fullmatch(m.room):
        return "Nickname and room use 1-24 letters, digits, _ or -"
    if not m.text:
        return "Message is empty"
    if len(m.text) > rules.max_length:
        return f"Message is longer than {rules.max_length} characters"
    return None


def delivered_data(m: Message) -> dict[str, Any]:
    """What ``room.<room>.msg`` carries for an accepted message.

    >>> delivered_data(Message("chat.message", "lobby", "ada", "hi", mid="m1"))
    {'user': 'ada', 'text': 'hi', 'mid': 'm1'}
    """
    data: dict[str, Any] = {"user": m.user, "text": m.text}
    if m.mid is not None:
        data["mid"] = m.mid
    return data


class Change(NamedTuple):
    """A user joined or left a room; ``members`` is the room's list after the change."""

    room: str
    user: str
    state: str
    members: list[str]


class Presence:
    """Room membership from joins, leaves and closed connections (no I/O, no timers).

    A user is present while at least one of their connections has joined the room, so a
    second tab neither re-announces nor, when closed, removes them.

    >>> p = Presence()
    >>> p.apply(Message("chat.join", "lobby", "ada", cid="c1"))
    [Change(room='lobby', user='ada', state='join', members=['ada'])]
    >>> p.apply(Message("demo.conn.closed", "", "ada", cid="c1"))
    [Change(room='lobby', user='ada', state='leave', members=[])]
    """

    def __init__(self) -> None:
        self.rooms: dict[str, dict[str, set[str]]] = {}  # room -> user -> connection ids
        self.joined: dict[str, set[tuple[str, str]]] = {}  # connection id -> (room, user)

    def snapshot(self) -> dict[str, Any]:
        """The membership as JSON (what a keyed worker group checkpoints).

        >>> p = Presence()
        >>> _ = p.apply(Message("chat.join", "lobby", "ada", cid="c1"))
        >>> q = Presence()
        >>> q.restore(p.snapshot())
        >>> q.apply(Message("demo.conn.closed", "", "ada", cid="c1"))
        [Change(room='lobby', user='ada', state='leave', members=[])]
        """
        rooms = {r: {u: sorted(c) for u, c in m.items()} for r, m in self.rooms.items()}
        return {"rooms": rooms}

    def restore(self, state: bytes | dict[str, Any]) -> None:
        self.rooms, self.joined = {}, {}
        rooms = state.get("rooms", {}) if isinstance(state, dict) else {}
        for room, members in rooms.items():
            for user, conns in members.items():
                self.rooms.setdefault(room, {})[user] = set(conns)
                for cid in conns:
                    self.joined.setdefault(cid, set()).add((room, user))

    def apply(self, m: Message) -> list[Change]:
        if m.cid is None:
            return []
        if m.kind == "chat.join" and NAME.fullmatch(m.room) and NAME.fullmatch(m.user):
            return self._join(m.room, m.user, m.cid)
        if m.kind == "chat.leave":
            return self._leave(m.room, m.user, m.cid)
        if m.kind == "demo.conn.closed":
            return [
                c for r, u in sorted(self.joined.get(m.cid, ())) for c in self._leave(r, u, m.cid)
            ]
        return []

    def _join(self, room: str, user: str, cid: str) -> list[Change]:
        members = self.rooms.setdefault(room, {})
        conns = members.setdefault(user, set())
        first = not conns
        conns.add(cid)
        self.joined.setdefault(cid, set()).add((room, user))
        return [Change(room, user, "join", sorted(members))] if first else []

    def _leave(self, room: str, user: str, cid: str) -> list[Change]:
        members = self.rooms.get(room, {})
        conns = members.get(user)
        if not conns or cid not in conns:
            return []
        conns.discard(cid)
        self.joined[cid].discard((room, user))
        if not self.joined[cid]:
            del self.joined[cid]
        if conns:
            return []
        del members[user]
        if not members:
            del self.rooms[room]
        return [Change(room, user, "leave", sorted(members))]


def valid_names(m: Message) -> bool:
    return bool(NAME.fullmatch(m.user) and NAME.fullmatch(m.room))


def is_chat(e: Event) -> bool:
    return e.type in KINDS


def kind_of(m: Message) -> str:
    return KINDS[m.kind]


def user_of(m: Message) -> str:
    return m.user


def typist_of(m: Message) -> tuple[str, str]:
    return m.room, m.user


def plain(m: Message) -> tuple[Any, ...]:
    """Stages that hold items (batches, windows) hold plain tuples: what a checkpoint
    stores and restores (a keyed worker group); ``Message._make`` reads them back."""
    return tuple(m)


def room_at(t: tuple[Any, ...]) -> str:
    return str(t[1])


def each(changes: list[Change]) -> Observable[Change]:
    return reactivex.from_iterable(changes)


class _Chat:
    """The chat pipeline's stages, one method each, and where their results go.

    Every stateful stage is built when :func:`build_pipeline` subscribes it, so a keyed
    worker group collects it (``operators.state``), the per-user and per-typist stages
    inside ``group_by_key`` included: a user's rate limit goes on where it stood when a
    room's partition moves to another member.
    """

    def __init__(self, send: Send, rules: Rules, scheduler: abc.SchedulerBase | None) -> None:
        self.send, self.rules, self.scheduler = send, rules, scheduler

    # -- refusals, told to the sender --------------------------------------------------
    def reject(self, m: Message, reason: str) -> None:
        if NAME.fullmatch(m.user):
            data = {"room": m.room, "text": m.text, "reason": reason}
            if m.mid is not None:
                data["mid"] = m.mid
            self.send(f"user.{m.user}.rejected", "chat.rejected", [data])

    def refuse(self, m: Message) -> None:
        self.reject(m, verdict(m, self.rules) or "")

    def check(self, m: Message) -> str:
        return "ok" if verdict(m, self.rules) is None else "bad"

    def repeated(self, m: Message) -> None:
        ttl = self.rules.repeat_ttl
        self.reject(m, f"Already said: the same message is accepted again after {ttl:g} s")

    def too_fast(self, m: Message) -> None:
        r = self.rules
        self.reject(m, f"Slow down: at most {r.burst} messages at once, then {r.rate:g} per second")

    # -- stages --------------------------------------------------------------------------
    def by_kind(self, inbound: Observable[Event]) -> Branches[Message]:
        """1. Routing by kind (malformed input is skipped: there is nobody to answer)."""
        return inbound.pipe(
            where(is_chat),
            select(parse_input, on_error="skip"),
            route(kind_of, ["message", "typing", "presence"]),
        )

    def checked(self, messages: Observable[Message]) -> Branches[Message]:
        """2. Filtering: accepted, or rejected with a reason the sender sees."""
        return messages.pipe(route(self.check, ["ok", "bad"]))

    def per_user(self, group: Group[str, Message]) -> Observable[Message]:
        r = self.rules
        limit = rate_limit(r.rate, r.burst, on_drop=self.too_fast, scheduler=self.scheduler)
        return group.pipe(limit)

    def flood_control(self, ok: Observable[Message]) -> Branches[Message]:
        """3. Flood control: repeats dropped, then one token bucket per user."""
        r, sch = self.rules, self.scheduler
        return ok.pipe(
            dedupe(repeat_key, ttl=r.repeat_ttl, scheduler=sch, on_drop=self.repeated),
            group_by_key(user_of, expire_after=60.0, scheduler=sch),
            ops.flat_map(self.per_user),
            broadcast(["deliver", "stats"]),
        )

    def per_typist(self, group: Group[tuple[str, str], Message]) -> Observable[Message]:
        # The throttle holds its pending signal as a plain tuple: a checkpoint stores that.
        return group.pipe(
            select(plain),
            throttle(self.rules.typing_every, latest=True, scheduler=self.scheduler),
            select(Message._make),
        )

    def typing(self, signals: Observable[Message]) -> Observable[Message]:
        """4. Typing: at most one signal per (room, user) per period."""
        return signals.pipe(
            where(valid_names),
            group_by_key(typist_of, expire_after=60.0, scheduler=self.scheduler),
            ops.flat_map(self.per_typist),
        )

    def batched(self, accepted: Observable[Message]) -> Observable[Any]:
        """5. Batched delivery: one publish per room per burst."""
        within = self.rules.batch_within
        return accepted.pipe(
            select(plain),
            batch_by_key(room_at, count=100, within=within, leading=True, scheduler=self.scheduler),
        )

    def presence(self, events: Observable[Message]) -> Observable[Change]:
        """6. Presence from joins, leaves and closed connections."""
        presence = Presence()
        register(presence, "presence")  # checkpointed when run by a keyed worker group
        return events.pipe(select(presence.apply), ops.flat_map(each))

    def stats(self, accepted: Observable[Message]) -> Observable[Any]:
        """7. Windowed statistics: messages per room per minute, refreshed every step."""
        r = self.rules
        return accepted.pipe(
            select(plain),
            sliding(r.stats_window, r.stats_step, key=room_at, agg=count_of(),
                    scheduler=self.scheduler),
        )  # fmt: skip

    # -- outputs ---------------------------------------------------------------------------
    def deliver(self, batch: tuple[str, list[tuple[Any, ...]]]) -> None:
        room, msgs = batch
        data = [delivered_data(Message._make(m)) for m in msgs]
        self.send(f"room.{room}.msg", "chat.message", data)

    def typing_signal(self, m: Message) -> None:
        self.send(f"room.{m.room}.typing", "chat.typing", [{"user": m.user}])

    def presence_change(self, c: Change) -> None:
        self.send(f"room.{c.room}.presence", "chat.presence", [c._asdict()])

    def stat(self, w: Window | Any) -> None:
        window = self.rules.stats_window
        data = {"room": w.key, "per_minute": w.value * 60.0 / window, "window": window}
        self.send("stats.rooms", "chat.stats", [data])


def repeat_key(m: Message) -> tuple[str, str, str]:
    return m.room, m.user, (m.text or "").casefold()


def build_pipeline(
    inbound: Observable[Event],
    send: Send,
    rules: Rules | None = None,
    *,
    scheduler: abc.SchedulerBase | None = None,
) -> abc.DisposableBase:
    """Wire the chat pipeline from ``inbound`` events to ``send``; dispose to stop it.

    ``inbound`` carries ``chat.*.in`` and ``presence.conn`` events (see the module doc).

    >>> from reactivex import Subject
    >>> inbound, out = Subject(), []
    >>> d = build_pipeline(inbound, lambda s, t, items: out.append(s))
    >>> inbound.on_next(Event.create({"user": "ada", "cid": "c1"}, subject="chat.lobby.in",
    ...                              type="chat.join"))
    >>> out
    ['room.lobby.presence']
    """
    chat = _Chat(send, rules or Rules(), scheduler)
    kinds = chat.by_kind(inbound)
    checked = chat.checked(kinds["message"])
    accepted = chat.flood_control(checked["ok"])
    subscriptions = [
        checked["bad"].subscribe(chat.refuse),
        chat.batched(accepted["deliver"]).subscribe(chat.deliver),
        chat.stats(accepted["stats"]).subscribe(chat.stat),
        chat.typing(kinds["typing"]).subscribe(chat.typing_signal),
        chat.presence(kinds["presence"]).subscribe(chat.presence_change),
    ]
    # connect downstream first, so no branch misses an event
    for branches in (accepted, checked, kinds):
        subscriptions.append(branches.connect())
    return CompositeDisposable(subscriptions)
