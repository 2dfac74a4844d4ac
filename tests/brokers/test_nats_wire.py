"""The NATS broker's sans-I/O decisions (adapters/brokers/nats_wire.py) against independent
models: nats-py's own reply-subject parser, and a simulated per-subject-limited log read by
a lagging push consumer."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st
from nats.aio.msg import Msg

from adapters.brokers.nats_wire import (
    Delivery,
    Step,
    batch_chunks,
    hole_between,
    holes_from,
    judge,
    parse_ack_reply,
)

ints = st.integers(0, 2**53)
tokens = st.text("abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=12)


@given(tokens, tokens, ints, ints, ints, ints, ints, st.booleans(), tokens, tokens)
def test_the_reply_subject_reads_as_nats_py_reads_it(
    stream: str,
    consumer: str,
    delivered: int,
    sseq: int,
    cseq: int,
    ns: int,
    pending: int,
    v2: bool,
    domain: str,
    account: str,
) -> None:
    tail = f"{stream}.{consumer}.{delivered}.{sseq}.{cseq}.{ns}.{pending}"
    reply = f"$JS.ACK.{domain}.{account}.{tail}.r4nd0m" if v2 else f"$JS.ACK.{tail}"
    ours = parse_ack_reply(reply)
    theirs = Msg.Metadata._from_reply(reply)
    assert ours is not None
    assert (ours.stream_seq, ours.consumer_seq, ours.pending) == (
        theirs.sequence.stream,
        theirs.sequence.consumer,
        theirs.num_pending,
    )
    assert ours.timestamp == ns / 1e9


@given(st.text(max_size=40))
def test_anything_else_is_not_a_delivery(text: str) -> None:
    if not text.startswith("$JS.ACK."):
        assert parse_ack_reply(text) is None


@given(st.integers(0, 3000), st.integers(1, 1000))
def test_batch_parts_cover_the_batch_in_order(n: int, limit: int) -> None:
    parts = batch_chunks(n, limit)
    assert [i for part in parts for i in part] == list(range(n))
    assert all(0 < len(part) <= limit for part in parts)


# -- a push consumer reading a per-subject-limited log ---------------------------------


@dataclass
class Log:
    """Offsets 1.. under a per-subject limit (the oldest of a subject is deleted)."""

    limit: int
    retained: dict[int, str] = field(default_factory=dict)
    deleted: set[int] = field(default_factory=set)
    last: int = 0

    def store(self, subject: str) -> None:
        self.last += 1
        self.retained[self.last] = subject
        mine = [o for o, s in self.retained.items() if s == subject]
        if len(mine) > self.limit:
            del self.retained[mine[0]]
            self.deleted.add(mine[0])

    def holes(self, pick: set[str]) -> tuple[list[int], int]:
        """What NatsBroker looks up: the deleted offsets, and the newest first retained
        offset among the picked subjects at the limit."""
        full = [s for s in pick if sum(1 for v in self.retained.values() if v == s) >= self.limit]
        firsts = [min(o for o, v in self.retained.items() if v == s) for s in full]
        return sorted(self.deleted), max(firsts, default=0)


steps = st.lists(st.one_of(st.sampled_from("abc"), st.just("read")), max_size=60)


@given(steps, st.integers(1, 4), st.sets(st.sampled_from("abc"), min_size=1))
def test_a_lagging_consumer_never_misses_a_deleted_matching_event(
    script: list[str], limit: int, pick: set[str]
) -> None:
    """Whenever the server's next delivery skips a matching event the limit deleted, the
    judgement is a gap, or a look-up that finds a hole at or after the lost event; and
    where nothing was deleted in between, no gap is ever reported."""
    log = Log(limit)
    every_subject = pick == set("abc")
    last = delivered = 0
    for step in script:
        if step != "read":
            log.store(step)
            continue
        ahead = sorted(o for o, s in log.retained.items() if s in pick and o > last)
        if not ahead:
            continue
        seq = ahead[0]
        d = Delivery(seq, delivered + 1, 0.0, pending=len(ahead) - 1)
        verdict = judge(last, delivered, d, every_subject=every_subject, per_subject=limit)
        deleted, before = log.holes(pick)
        hole = hole_between(last, seq, holes_from(deleted, before, min(log.retained), 0))
        lost = [o for o in log.deleted if last < o < seq]
        lost_matching = [o for o in lost if log_subject(log, o, script) in pick]
        if lost_matching:
            assert verdict in (Step.HOLE, Step.VERIFY)
            if verdict is Step.VERIFY:
                assert hole is not None and hole >= max(lost_matching)
            return  # the subscription ends with the gap
        if not lost:  # at most a look-up, which finds nothing
            assert verdict is not Step.HOLE
            assert verdict is not Step.VERIFY or hole is None
        if verdict is Step.VERIFY and hole is not None:
            return  # conservative: another subject's loss in the range is reported too
        if verdict is Step.HOLE:
            return
        last, delivered = seq, delivered + 1


def log_subject(log: Log, offset: int, script: list[str]) -> str:
    """The subject stored at ``offset`` (the offset-th publish of the script)."""
    return [s for s in script if s != "read"][offset - 1]
