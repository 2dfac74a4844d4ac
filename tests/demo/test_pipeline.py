"""The chat pipeline without a browser: marble tests in virtual time (TestScheduler ticks
are seconds) and a property test of presence against a simple model."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from reactivex.testing import ReactiveTest, TestScheduler

from adapters.demo.pipeline import Change, Message, Presence, Rules, build_pipeline
from streams import Event

on_next = ReactiveTest.on_next
# batch_within is a binary fraction so virtual clock sums are exact (see the report on
# operators.batch: a timer re-armed for a float residue of 1e-16 never advances the clock)
RULES = Rules(
    max_length=20, rate=1.0, burst=2, repeat_ttl=30.0, typing_every=2.0, batch_within=0.25
)


def ev(kind: str, user: str, room: str = "lobby", **data: Any) -> Event:
    subject = "presence.conn" if kind.startswith("demo.conn") else f"chat.{room}.in"
    return Event.create({"user": user, **data}, subject=subject, type=kind)


def msg(user: str, text: str, room: str = "lobby") -> Event:
    return ev("chat.message", user, room, text=text)


def run(
    *timed: tuple[float, Event], rules: Rules = RULES, until: float = 500
) -> list[tuple[float, str, list[Any]]]:
    """Feed events at virtual times; return every ``send`` call as (time, subject, items)."""
    s = TestScheduler()
    xs = s.create_hot_observable(*[on_next(t, e) for t, e in timed])  # type: ignore[arg-type]
    calls: list[tuple[float, str, list[Any]]] = []
    build_pipeline(xs, lambda subj, _t, items: calls.append((s.clock, subj, items)), rules,
                   scheduler=s)  # fmt: skip
    s.advance_to(until)
    return calls


def texts(calls: list[tuple[float, str, list[Any]]], subject: str) -> list[tuple[float, str]]:
    return [(t, d["text"]) for t, subj, items in calls if subj == subject for d in items]


def test_messages_are_routed_by_room_and_delivered_in_batches() -> None:
    calls = run(
        (10, msg("ada", "hi all")), (10, msg("bob", "hey")), (10, msg("cy", "yo", room="ops"))
    )
    # leading-edge batching: the first message of a quiet room goes out at once; what
    # follows within batch_within travels together when that period ends
    ada, bob = {"user": "ada", "text": "hi all"}, {"user": "bob", "text": "hey"}
    assert [c for c in calls if c[1] != "stats.rooms"] == [
        (10, "room.lobby.msg", [ada]),
        (10, "room.ops.msg", [{"user": "cy", "text": "yo"}]),
        (10.25, "room.lobby.msg", [bob]),
    ]


def test_empty_oversized_and_badly_named_messages_are_rejected_to_the_sender() -> None:
    calls = run(
        (10, msg("ada", "")),
        (11, msg("ada", "   ")),
        (12, msg("ada", "x" * 21)),
        (13, msg("ada", "ok", room="no-such-room!")),  # not a valid room name
        (14, msg("b o b", "who am I")),  # invalid nickname: nobody to tell
    )
    reasons = [(t, s, items[0]["reason"]) for t, s, items in calls if s != "stats.rooms"]
    assert reasons == [
        (10, "user.ada.rejected", "Message is empty"),
        (11, "user.ada.rejected", "Message is empty"),
        (12, "user.ada.rejected", "Message is longer than 20 characters"),
        (13, "user.ada.rejected", "Nickname and room use 1-24 letters, digits, _ or -"),
    ]


def test_repeated_messages_are_refused_until_the_ttl_passes() -> None:
    calls = run((10, msg("ada", "spam")), (15, msg("ada", "SPAM")), (41, msg("ada", "spam")))
    assert texts(calls, "room.lobby.msg") == [(10, "spam"), (41, "spam")]
    refused = [(t, items[0]["text"]) for t, s, items in calls if s == "user.ada.rejected"]
    assert refused == [(15, "SPAM")]  # the sender is told; nobody else sees it
    assert {s for _, s, _ in calls} == {"room.lobby.msg", "stats.rooms", "user.ada.rejected"}


def test_rate_limit_is_per_user_and_refills() -> None:
    calls = run(
        *[(10, msg("ada", f"m{i}")) for i in range(4)],
        (10, msg("bob", "mine passes")),
        (11, msg("ada", "m4")),  # one token refilled after a second
        (11.5, msg("ada", "m5")),  # half a token: refused
    )
    assert texts(calls, "room.lobby.msg") == [
        (10, "m0"), (10.25, "m1"), (10.25, "mine passes"), (11, "m4")
    ]  # fmt: skip
    refused = [(t, items[0]["text"]) for t, s, items in calls if s == "user.ada.rejected"]
    assert refused == [(10, "m2"), (10, "m3"), (11.5, "m5")]
    assert all("Slow down" in items[0]["reason"] for _, s, items in calls if "rejected" in s)


def test_typing_signals_are_throttled_per_user_and_room() -> None:
    keys = [10, 10.2, 10.4, 11, 11.5, 13]
    calls = run(
        *[(t, ev("chat.typing", "bob")) for t in keys],
        (10.5, ev("chat.typing", "ada")),
        (10.6, ev("chat.typing", "bob", room="ops")),
    )
    got = [(t, s, items[0]["user"]) for t, s, items in calls]
    assert got == [
        (10, "room.lobby.typing", "bob"),  # the first keystroke at once
        (10.5, "room.lobby.typing", "ada"),  # another user is not throttled by bob
        (10.6, "room.ops.typing", "bob"),  # nor another room
        (12, "room.lobby.typing", "bob"),  # the latest of the window, at its end
        (14, "room.lobby.typing", "bob"),  # 13 fell in the window opened at 12
    ]


def test_presence_follows_joins_leaves_and_closed_connections() -> None:
    calls = run(
        (1, ev("chat.join", "ada", cid="a1")),
        (2, ev("chat.join", "ada", cid="a2")),  # a second tab: no new join
        (3, ev("chat.join", "bob", cid="b1")),
        (4, ev("demo.conn.closed", "ada", cid="a1")),  # one tab closed: still present
        (5, ev("demo.conn.closed", "ada", cid="a2")),
        (6, ev("chat.leave", "bob", cid="b1")),
    )
    got = [(t, s, d["user"], d["state"], d["members"]) for t, s, [d] in calls]
    assert got == [
        (1, "room.lobby.presence", "ada", "join", ["ada"]),
        (3, "room.lobby.presence", "bob", "join", ["ada", "bob"]),
        (5, "room.lobby.presence", "ada", "leave", ["bob"]),
        (6, "room.lobby.presence", "bob", "leave", []),
    ]


def test_windowed_stats_count_messages_per_room_per_minute() -> None:
    rules = Rules(rate=100, burst=100, stats_window=60.0, stats_step=30.0, batch_within=0.25)
    calls = run(
        (1, msg("ada", "a")), (2, msg("bob", "b")), (3, msg("ada", "c")),
        (40, msg("cy", "d", room="ops")),
        rules=rules, until=200,
    )  # fmt: skip
    stats = [
        (t, items[0]["room"], items[0]["per_minute"]) for t, s, items in calls if s == "stats.rooms"
    ]
    # sliding windows [-30, 30), [0, 60), [30, 90) ... each closed by its timer
    assert stats == [(30, "lobby", 3.0), (60, "lobby", 3.0), (60, "ops", 1.0), (90, "ops", 1.0)]


def test_malformed_input_is_skipped_and_the_pipeline_keeps_running() -> None:
    bad = Event.create("not an object", subject="chat.lobby.in", type="chat.message")
    calls = run((1, bad), (2, msg("ada", "still here")))
    assert texts(calls, "room.lobby.msg") == [(2, "still here")]


ops_strategy = st.lists(
    st.tuples(
        st.sampled_from(["chat.join", "chat.leave", "demo.conn.closed"]),
        st.sampled_from(["r1", "r2"]),
        st.sampled_from(["ada", "bob"]),
        st.sampled_from(["1", "2"]),  # a connection belongs to one user: cid = user + n
    ),
    max_size=40,
)


@given(ops_strategy)
def test_presence_matches_a_model_of_open_connections(ops: list[tuple[str, str, str, str]]) -> None:
    p = Presence()
    joined: set[tuple[str, str, str]] = set()  # (room, user, cid)

    def present(room: str) -> list[str]:
        return sorted({u for r, u, _ in joined if r == room})

    for kind, room, user, n in ops:
        cid = user + n
        before = {r: present(r) for r in ("r1", "r2")}
        changes = p.apply(Message(kind, room, user, cid=cid))
        if kind == "chat.join":
            joined.add((room, user, cid))
        elif kind == "chat.leave":
            joined.discard((room, user, cid))
        else:
            joined = {j for j in joined if j[2] != cid}
        for r in ("r1", "r2"):
            after = present(r)
            expected = [Change(r, u, "join", after) for u in sorted(set(after) - set(before[r]))]
            expected += [Change(r, u, "leave", after) for u in sorted(set(before[r]) - set(after))]
            assert sorted(c for c in changes if c.room == r) == sorted(expected)
