from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams import SubjectError, SubjectIndex, match, validate_pattern, validate_subject

tokens = st.sampled_from(["a", "b", "chat", "lobby", "x1"])
subjects = st.lists(tokens, min_size=1, max_size=5).map(".".join)


@st.composite
def patterns(draw: st.DrawFn) -> str:
    toks = draw(st.lists(tokens | st.just("*"), min_size=1, max_size=5))
    if draw(st.booleans()):
        toks = [*toks[:-1], ">"]
    return ".".join(toks)


def reference(pattern: str, subject: str) -> bool:
    """Regex translation of the NATS rules, independent of the matcher under test."""
    parts = []
    for tok in pattern.split("."):
        parts.append({"*": r"[^.]+", ">": r"[^.]+(?:\.[^.]+)*"}.get(tok, re.escape(tok)))
    return re.fullmatch(r"\.".join(parts), subject) is not None


@given(patterns(), subjects)
def test_match_agrees_with_reference(pattern: str, subject: str):
    assert match(pattern, subject) == reference(pattern, subject)


@given(st.lists(patterns(), max_size=12), st.lists(subjects, min_size=1, max_size=8), st.data())
def test_index_equals_brute_force(pats: list[str], subs: list[str], data: st.DataObject):
    idx: SubjectIndex[int] = SubjectIndex()
    keys = [idx.add(p, i) for i, p in enumerate(pats)]
    removed = set(data.draw(st.sets(st.sampled_from(range(len(pats)))))) if pats else set()
    for i in removed:
        idx.remove(keys[i])
    for s in subs:
        expected = tuple(i for i, p in enumerate(pats) if i not in removed and match(p, s))
        assert idx.lookup(s) == expected
    assert len(idx) == len(pats) - len(removed)


def test_index_prunes_empty_branches():
    idx: SubjectIndex[str] = SubjectIndex()
    k = idx.add("a.b.c.d", "v")
    idx.remove(k)
    assert idx._root.children == {}
    idx.remove(k)  # unknown keys are ignored


@pytest.mark.parametrize(
    "bad", ["", "a..b", ".a", "a.", "a.*", "a.>", "a b", "ü.x", "a" * 300, 5, None]
)
def test_invalid_subjects(bad: object):
    with pytest.raises(SubjectError):
        validate_subject(bad)


@pytest.mark.parametrize("bad", ["", "a.>.b", "a..*", "*x", "a.b>"])
def test_invalid_patterns(bad: str):
    with pytest.raises(SubjectError):
        validate_pattern(bad)


@pytest.mark.parametrize("good", ["a", "chat.lobby.msg", "*", ">", "a.*.c", "a.>", "user-1.x_y:z"])
def test_valid_patterns(good: str):
    assert validate_pattern(good) == good


@given(
    st.lists(
        st.tuples(st.booleans(), st.sampled_from(["a.*", "a.>", "*.b", "a.b", ">"])), max_size=12
    ),
    st.lists(st.sampled_from(["a.b", "a.c", "x.b", "a.b.c"]), max_size=6),
)
def test_resolved_answers_exactly_what_lookup_answers(
    steps: list[tuple[bool, str]], subjects: list[str]
) -> None:
    """A subject in ``resolved`` maps to what ``lookup`` returns now, whatever was added or
    removed since: the index forgets resolutions when it changes."""
    idx: SubjectIndex[int] = SubjectIndex()
    keys: list[int] = []
    for i, (add, pattern) in enumerate(steps):
        if add or not keys:
            keys.append(idx.add(pattern, i))
        else:
            idx.remove(keys.pop(0))
        for s in subjects:
            hit = idx.resolved.get(s)
            assert hit is None or hit == idx.lookup(s)
        for s in subjects[: i % 3]:  # resolve some, so the next change meets a cache
            idx.lookup(s)
