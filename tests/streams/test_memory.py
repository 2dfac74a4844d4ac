from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams import (
    Event,
    EventError,
    GapError,
    MemoryBroker,
    Position,
    Retention,
    SubjectError,
    match,
)

SUBJECTS = ["chat.a.msg", "chat.b.msg", "chat.a.typing", "sys.health"]
PATTERNS = ["chat.>", "chat.*.msg", "chat.a.*", ">", "sys.health", "none.here"]


def offsets(events: list[Event]) -> list[int]:
    return [Position.parse(e.sequence or "").offset for e in events]


def test_publish_returns_ordered_positions_across_subjects():
    b = MemoryBroker()
    ps = [b.publish(s, i) for i, s in enumerate(SUBJECTS)]
    assert [p.offset for p in ps] == [1, 2, 3, 4]
    assert {p.epoch for p in ps} == {b.epoch}
    assert b.latest() == ps[-1] and b.earliest() == ps[0]


def test_events_are_stamped_with_subject_and_position():
    b = MemoryBroker()
    got: list[Event] = []
    b.subscribe("chat.>").subscribe(got.append)
    p = b.publish("chat.a.msg", Event.create({"t": 1}, subject="ignored"))
    assert got[0].subject == "chat.a.msg" and got[0].sequence == str(p)


op = st.one_of(
    st.tuples(st.just("pub"), st.sampled_from(SUBJECTS)),
    st.tuples(st.just("many"), st.sampled_from(SUBJECTS), st.integers(0, 4)),
    st.tuples(st.just("sub"), st.sampled_from(PATTERNS), st.none() | st.integers(0, 30)),
    st.tuples(st.just("echo"), st.sampled_from(PATTERNS), st.integers(0, 30)),
)


# History keeps event objects without a byte bound and only encoded bytes with one.
STORAGE = [None, 1 << 30]


@pytest.mark.parametrize("max_bytes", STORAGE, ids=["objects", "bytes"])
@given(ops=st.lists(op, max_size=40))
def test_replay_then_live_never_loses_or_duplicates(max_bytes: int | None, ops: list[tuple]):
    """Every subscriber sees exactly the matching events after its start, in log order,
    including events that subscribers publish from inside on_next (re-entrancy)."""
    b = MemoryBroker(Retention(max_events=None, max_bytes=max_bytes, max_per_subject=None))
    subs: list[tuple[str, int, list[Event]]] = []
    echoes = [0]
    for o in ops:
        if o[0] == "pub":
            b.publish(o[1], {})
            continue
        if o[0] == "many":
            ps = b.publish_many(o[1], [{"i": i} for i in range(o[2])])
            assert (
                [p.offset for p in ps] == list(range(ps[0].offset, ps[0].offset + o[2]))
                if ps
                else True
            )
            continue
        pattern, since = o[1], o[2]
        latest = b.latest().offset if b.latest() else 0
        start = latest if since is None else min(since, latest)
        got: list[Event] = []

        def on_next(e: Event, got: list[Event] = got, echo: bool = o[0] == "echo") -> None:
            got.append(e)
            if echo and echoes[0] < 20 and e.subject != "sys.health":
                echoes[0] += 1
                b.publish("sys.health", {"echo": e.sequence})

        sp = None if since is None else Position(b.epoch, start)
        b.subscribe(pattern, since=sp).subscribe(on_next)
        subs.append((pattern, start, got))
    log = b.history(">")
    for pattern, start, got in subs:
        expected = [e.sequence for e in log if match(pattern, e.subject or "")]
        expected = [s for s in expected if Position.parse(s or "").offset > start]
        assert [e.sequence for e in got] == expected


def test_since_as_string_and_dispose_stops_delivery():
    b = MemoryBroker()
    p = b.publish("chat.a.msg", 1)
    b.publish("chat.a.msg", 2)
    got: list[object] = []
    d = b.subscribe("chat.>", since=str(p)).subscribe(lambda e: got.append(e.data))
    b.publish("chat.a.msg", 3)
    d.dispose()
    b.publish("chat.a.msg", 4)
    assert got == [2, 3]
    assert b.subscriber_count == 0


def test_retention_by_count_reports_gap_with_earliest():
    b = MemoryBroker(Retention(max_events=3, max_bytes=None, max_per_subject=None))
    first = b.publish("chat.a.msg", 0)
    for i in range(1, 6):
        b.publish("chat.a.msg", i)
    assert 1 <= len(b) <= 3  # global limits trim to 90% in one go (amortized eviction)
    errors: list[Exception] = []
    b.subscribe("chat.>", since=first).subscribe(on_error=errors.append)
    gap = errors[0]
    assert isinstance(gap, GapError)
    assert gap.earliest == b.earliest() and gap.requested == first
    # resuming from the gap's suggestion replays everything retained, nothing skipped silently
    got: list[Event] = []
    b.subscribe("chat.>", since=gap.resume_from).subscribe(got.append)
    assert offsets(got) == list(range(7 - len(b), 7))


def test_resume_exactly_at_the_edge_is_not_a_gap():
    b = MemoryBroker(Retention(max_events=None, max_bytes=None, max_per_subject=2))
    ps = [b.publish("x", i) for i in range(4)]
    got: list[Event] = []
    b.subscribe(">", since=ps[1]).subscribe(got.append, on_error=pytest.fail)
    assert offsets(got) == [3, 4]
    with pytest.raises(GapError):
        b.history(">", since=ps[0])


def test_per_subject_limit_protects_quiet_rooms():
    b = MemoryBroker(Retention(max_events=None, max_bytes=None, max_per_subject=5))
    quiet = b.publish("chat.quiet.msg", "hello")
    for i in range(100):
        b.publish("chat.busy.msg", i)
    assert [e.data for e in b.history("chat.quiet.msg")] == ["hello"]
    assert len(b.history("chat.busy.msg")) == 5
    # the quiet room can still resume from before the flood: nothing of it was lost
    got: list[Event] = []
    b.subscribe("chat.quiet.msg", since=Position(b.epoch, 0)).subscribe(got.append)
    assert [e.sequence for e in got] == [str(quiet)]
    # but the busy room lost events after position 0
    with pytest.raises(GapError):
        b.history("chat.busy.msg", since=Position(b.epoch, 0))


def test_retention_by_bytes():
    b = MemoryBroker(Retention(max_events=None, max_bytes=2000, max_per_subject=None))
    for _ in range(100):
        b.publish("x", "y" * 100)
    size = sum(e.size for e in b.history(">"))
    assert size <= 2000 and len(b) >= 5


def test_retention_by_age_uses_the_clock():
    now = [0.0]
    b = MemoryBroker(Retention(max_age=10, max_per_subject=None), clock=lambda: now[0])
    old = b.publish("x", 1)
    now[0] = 5
    b.publish("x", 2)
    now[0] = 12
    assert [e.data for e in b.history(">")] == [2]
    with pytest.raises(GapError):
        b.history(">", since=Position(b.epoch, old.offset - 1))


def test_purge_changes_epoch_and_old_positions_gap():
    b = MemoryBroker()
    p = b.publish("x", 1)
    old_epoch = b.epoch
    b.purge()
    assert b.epoch != old_epoch and len(b) == 0
    with pytest.raises(GapError, match="epoch"):
        b.history(">", since=p)
    assert b.publish("x", 2).offset == 1


def test_position_ahead_of_log_is_a_gap():
    b = MemoryBroker()
    b.publish("x", 1)
    with pytest.raises(GapError, match="ahead"):
        b.history(">", since=Position(b.epoch, 99))


def test_a_faulty_consumer_harms_nobody_else():
    b = MemoryBroker()
    good: list[object] = []
    errors: list[Exception] = []

    def bad(e: Event) -> None:
        raise RuntimeError("boom")

    b.subscribe(">").subscribe(bad, on_error=errors.append)
    b.subscribe(">").subscribe(lambda e: good.append(e.data))
    b.publish("x", 1)
    b.publish("x", 2)
    assert good == [1, 2]
    assert len(errors) == 1 and b.failed_subscribers == 1 and b.subscriber_count == 1


def test_bad_subjects_and_patterns_raise():
    b = MemoryBroker()
    with pytest.raises(SubjectError):
        b.publish("chat.*", 1)
    with pytest.raises(SubjectError):
        b.subscribe("a..b")
    assert b.latest() is None


def test_last_n_and_history_limit():
    b = MemoryBroker()
    for i in range(10):
        b.publish(f"chat.{'a' if i % 2 else 'b'}.msg", i)
    assert [e.data for e in b.last("chat.a.msg", 3)] == [5, 7, 9]
    assert [e.data for e in b.history("chat.>", limit=2)] == [0, 1]


async def test_close_completes_subscribers():
    b = MemoryBroker()
    done: list[bool] = []
    b.subscribe(">").subscribe(on_completed=lambda: done.append(True))
    await b.close()
    assert done == [True]
    with pytest.raises(RuntimeError):
        b.publish("x", 1)


def test_publish_cost_depends_on_matching_subscribers_only():
    b = MemoryBroker()
    for i in range(1000):
        b.subscribe(f"room{i}.>").subscribe(lambda e: None)
    b.publish("room7.msg", 1)
    assert len(b._dispatch.matching("room7.msg")) == 1


def test_publish_many_equals_repeated_publish():
    a, b = MemoryBroker(Retention(max_per_subject=3)), MemoryBroker(Retention(max_per_subject=3))
    got_a: list[object] = []
    got_b: list[object] = []
    a.subscribe(">").subscribe(lambda e: got_a.append(e.data))
    b.subscribe(">").subscribe(lambda e: got_b.append(e.data))
    for i in range(5):
        a.publish("x", i)
    positions = b.publish_many("x", range(5))
    assert got_a == got_b == [0, 1, 2, 3, 4]
    assert [p.offset for p in positions] == [1, 2, 3, 4, 5]
    assert [e.data for e in a.history(">")] == [e.data for e in b.history(">")] == [2, 3, 4]
    with pytest.raises(GapError):
        b.history(">", since=Position(b.epoch, 1))


def test_gap_resume_never_replays_what_the_consumer_already_has():
    """A per-subject eviction leaves older events of quiet subjects retained: the gap names
    where history is complete again, so resuming neither meets the hole again nor starts
    over at the quiet room's head."""
    b = MemoryBroker(Retention(max_events=None, max_per_subject=3))
    b.publish("chat.quiet.msg", "q1")
    seen = b.publish("chat.busy.msg", "b2")
    for i in range(3, 11):
        b.publish("chat.busy.msg", f"b{i}")
    with pytest.raises(GapError) as info:
        b.history("chat.>", since=seen)
    gap = info.value
    assert gap.earliest == Position(b.epoch, 8)  # complete history from here on
    assert gap.resume_from == Position(b.epoch, 7)
    assert [e.data for e in b.history("chat.>", since=gap.resume_from)] == ["b8", "b9", "b10"]


@pytest.mark.parametrize("max_bytes", STORAGE, ids=["objects", "bytes"])
@given(
    subjects=st.lists(st.sampled_from(SUBJECTS), max_size=40),
    pattern=st.sampled_from(PATTERNS),
    since=st.integers(0, 40),
    per_subject=st.integers(1, 6),
    total=st.integers(3, 20),
)
def test_no_silent_skip_and_gap_resume_always_succeeds(
    max_bytes: int | None,
    subjects: list[str],
    pattern: str,
    since: int,
    per_subject: int,
    total: int,
):
    """Without a gap, history after ``since`` is exactly what was published; with one,
    resuming from ``resume_from`` succeeds and repeats nothing the consumer had."""
    b = MemoryBroker(Retention(max_events=total, max_bytes=max_bytes, max_per_subject=per_subject))
    published = [(b.publish(s, i), s) for i, s in enumerate(subjects)]
    since = min(since, len(subjects))
    start = Position(b.epoch, since)
    expected = [p.offset for p, s in published if p.offset > since and match(pattern, s)]
    try:
        got = offsets(b.history(pattern, since=start))
    except GapError as gap:
        assert gap.resume_from is not None and gap.resume_from.offset >= since
        again = offsets(b.history(pattern, since=gap.resume_from))
        assert all(o > since for o in again)
        assert again == [o for o in expected if o > gap.resume_from.offset]
    else:
        assert got == expected


def test_disposed_during_a_dispatch_receives_nothing_more():
    b = MemoryBroker()
    second: list[object] = []
    handle: list = []

    def first(e: Event) -> None:
        handle[0].dispose()

    b.subscribe(">").subscribe(first)
    handle.append(b.subscribe(">").subscribe(lambda e: second.append(e.data)))
    b.publish("x", 1)
    b.publish("x", 2)
    assert second == []


def test_age_bookkeeping_stays_bounded_by_other_limits():
    b = MemoryBroker(Retention(max_events=100, max_age=3600, max_per_subject=10))
    for i in range(20_000):
        b.publish(f"s{i % 7}", i)
    assert len(b) <= 100
    assert len(b._log.times) <= 2 * len(b) + 1024


def test_replay_stops_when_the_subscriber_disposes_from_inside():
    from reactivex import operators as ops

    b = MemoryBroker(Retention(max_per_subject=None))
    for i in range(1000):
        b.publish("x", i)
    calls: list[int] = []
    source = b.subscribe(">", since=Position(b.epoch, 0)).pipe(ops.do_action(calls.append))
    got: list[Event] = []
    source.pipe(ops.take(3)).subscribe(got.append)
    assert [e.data for e in got] == [0, 1, 2]
    assert len(calls) == 3  # the replay stopped instead of running through the other 997
    assert b.subscriber_count == 0


# -- history kept as encoded bytes (a byte bound) ------------------------------------


json_data = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=5),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=3)
    ),
    max_leaves=8,
)


@given(st.lists(st.tuples(st.sampled_from(SUBJECTS), json_data), max_size=20), st.integers(1, 5))
def test_byte_bounded_history_equals_what_was_published(
    items: list[tuple[str, object]], n: int
) -> None:
    """Rebuilt from their bytes, retained events equal the published ones: history, last
    and replay alike, with the same encoding (nothing is re-encoded on the way out)."""
    b = MemoryBroker(Retention(max_events=None, max_bytes=1 << 30, max_per_subject=None))
    live: list[Event] = []
    b.subscribe(">").subscribe(live.append)
    for subject, data in items:
        b.publish(subject, data)
    history = b.history(">")
    assert history == live
    assert [e.encode() for e in history] == [e.encode() for e in live]
    assert [e.data for e in history] == [data for _, data in items]
    assert b.last(">", n) == live[-n:]
    replayed: list[Event] = []
    b.subscribe(">", since=Position(b.epoch, 0)).subscribe(replayed.append)
    assert replayed == live


def test_byte_bound_counts_exactly_the_retained_encodings():
    b = MemoryBroker(Retention(max_events=None, max_bytes=5000, max_per_subject=3))
    for i in range(200):
        b.publish(f"room{i % 4}", {"i": i, "pad": "x" * (i % 37)})
    retained = b.history(">")
    assert b.retained_bytes == sum(e.size for e in retained) <= 5000
    assert len(b) == len(retained)


def test_an_event_that_cannot_be_encoded_stores_nothing_under_a_byte_bound():
    b = MemoryBroker(Retention(max_bytes=1 << 20))
    got: list[Event] = []
    b.subscribe(">").subscribe(got.append)
    with pytest.raises(EventError):
        b.publish("x", {1, 2})
    with pytest.raises(EventError):
        b.publish_many("x", [1, {3}])
    assert (len(b), b.published, got, b.retained_bytes) == (0, 0, [], 0)
    assert b.publish("x", 1).offset == 1


def test_live_subscribers_get_the_published_object_and_history_an_equal_copy():
    b = MemoryBroker(Retention(max_bytes=1 << 20))
    got: list[Event] = []
    b.subscribe(">").subscribe(got.append)
    e = Event.create({"t": (1, 2)})
    b.publish("x", e)
    assert got == [e] and got[0] is e
    (kept,) = b.history(">")
    assert kept is not e and kept.data == {"t": [1, 2]}  # what JSON gives back
    assert kept.encode() == e.encode()


def test_a_stored_event_shares_its_room_subject():
    """Subjects are interned per room: 100,000 retained events do not hold 100,000 copies."""
    b = MemoryBroker()
    for i in range(3):
        b.publish("".join(["chat.", "lobby"]), i)
    a, c, _ = b.history(">")
    assert a.subject is c.subject


RETENTIONS = [
    Retention(max_events=None, max_per_subject=None),
    Retention(max_events=4, max_per_subject=None),
    Retention(max_events=None, max_per_subject=2),
    Retention(max_events=5, max_bytes=600, max_per_subject=3),
]
# How an event arrives: fresh, already published elsewhere, or already encoded.
KINDS = st.sampled_from(["fresh", "published", "encoded"])


def arriving(kind: str, i: int) -> Event:
    e = Event.create({"i": i})
    if kind == "published":
        MemoryBroker().publish("elsewhere", e)
    elif kind == "encoded":
        e.encode()
    return e


@given(
    retention=st.sampled_from(RETENTIONS),
    batches=st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.lists(KINDS, max_size=6)), max_size=6
    ),
)
def test_batches_and_single_publishes_give_the_same_log_and_deliveries(
    retention: Retention, batches: list[tuple[str, list[str]]]
):
    """publish_many runs its own loop in the log: it must agree with publish event by
    event (positions, stamps, evictions, bytes, gaps) whatever each event's history."""
    one, many = MemoryBroker(retention), MemoryBroker(retention)
    got_one: list[Event] = []
    got_many: list[Event] = []
    one.subscribe(">").subscribe(got_one.append)
    many.subscribe(">").subscribe(got_many.append)
    pos_one: list[Position] = []
    pos_many: list[Position] = []
    n = 0
    for subject, kinds in batches:
        for kind in kinds:
            pos_one.append(one.publish(subject, arriving(kind, n)))
            n += 1
        n -= len(kinds)
        pos_many += many.publish_many(
            subject, [arriving(kind, n + k) for k, kind in enumerate(kinds)]
        )
        n += len(kinds)

    def seen(events: list[Event]) -> list[tuple[object, str | None, str | None]]:
        return [(e.data, e.subject, (e.sequence or "").split("-")[-1]) for e in events]

    assert [p.offset for p in pos_one] == [p.offset for p in pos_many] == list(range(1, n + 1))
    assert seen(got_one) == seen(got_many)
    assert [p.offset for p in pos_many] == offsets(got_many)  # returned = stamped
    assert seen(one.history(">")) == seen(many.history(">"))
    assert (len(one), one.published, one.retained_bytes) == (
        len(many),
        many.published,
        many.retained_bytes,
    )
    for p in pos_one[:: max(1, n // 4)]:
        gaps = []
        for b, q in ((one, p), (many, Position(many.epoch, p.offset))):
            try:
                b.history(">", since=q)
                gaps.append(False)
            except GapError:
                gaps.append(True)
        assert gaps[0] == gaps[1]


def test_publish_returns_the_stamped_position_also_for_copies_and_after_purge():
    b = MemoryBroker()
    got: list[Event] = []
    b.subscribe(">").subscribe(got.append)
    e = Event.create(1)
    first = b.publish("x", e)
    again = b.publish("y", e)  # already stamped: published as a copy
    assert got[0] is e and got[1] is not e
    assert (e.sequence, got[1].sequence) == (str(first), str(again))
    assert again.offset == first.offset + 1
    b.purge()
    after = b.publish("x", 2)
    assert (after.epoch, after.offset) == (b.epoch, 1) and got[-1].sequence == str(after)
    assert b.latest() == after
