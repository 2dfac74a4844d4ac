"""Subjects and patterns, as in NATS: ``chat.lobby.msg``, ``chat.*.msg``, ``chat.>``.

Tokens are separated by dots. In a pattern ``*`` matches exactly one token and ``>``
(last token only) matches one or more remaining tokens. This module is free of I/O;
:class:`SubjectIndex` finds the subscribers of a subject in time proportional to the
subject's depth and the number of matches, not to the number of subscriptions.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Final, Generic, TypeVar

from .errors import InvalidInput

__all__ = [
    "SubjectError",
    "SubjectIndex",
    "is_pattern",
    "match",
    "validate_pattern",
    "validate_subject",
]

T = TypeVar("T")

MAX_LENGTH: Final = 256
_TOKEN = re.compile(r"[A-Za-z0-9_\-:@~=+]+")


class SubjectError(InvalidInput):
    """An invalid subject or pattern; the message says what is wrong."""


def _check(name: object, wildcards: bool) -> list[str]:
    kind = "pattern" if wildcards else "subject"
    if not isinstance(name, str):
        raise SubjectError(f"{kind} must be a string, got {type(name).__name__}")
    if not name:
        raise SubjectError(f"{kind} is empty")
    if len(name) > MAX_LENGTH:
        raise SubjectError(f"{kind} is longer than {MAX_LENGTH} characters")
    tokens = name.split(".")
    last = len(tokens) - 1
    for i, tok in enumerate(tokens):
        if not tok:
            raise SubjectError(f"{kind} {name!r} has an empty token")
        if tok == "*" or tok == ">":
            if not wildcards:
                raise SubjectError(f"subject {name!r} may not contain wildcards")
            if tok == ">" and i != last:
                raise SubjectError(f"pattern {name!r}: '>' must be the last token")
        elif not _TOKEN.fullmatch(tok):
            raise SubjectError(
                f"{kind} {name!r}: token {tok!r} may use only letters, digits and _-:@~=+"
            )
    return tokens


def validate_subject(subject: object) -> str:
    """Return ``subject`` if it is a valid concrete subject, else raise :class:`SubjectError`."""
    _check(subject, wildcards=False)
    return subject  # type: ignore[return-value]


def validate_pattern(pattern: object) -> str:
    """Return ``pattern`` if it is a valid pattern (wildcards allowed), else raise."""
    _check(pattern, wildcards=True)
    return pattern  # type: ignore[return-value]


def is_pattern(name: str) -> bool:
    """True if ``name`` contains a wildcard token."""
    return any(t == "*" or t == ">" for t in name.split("."))


def match(pattern: str, subject: str) -> bool:
    """True if ``subject`` matches ``pattern``.

    >>> match("chat.*.msg", "chat.lobby.msg"), match("chat.>", "chat"), match(">", "a.b")
    (True, False, True)
    """
    p = pattern.split(".")
    s = subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(p) == len(s)


class _Node(Generic[T]):
    __slots__ = ("children", "full", "here")

    def __init__(self) -> None:
        self.children: dict[str, _Node[T]] = {}
        self.here: dict[int, T] = {}  # subscriptions ending at this node
        self.full: dict[int, T] = {}  # subscriptions with '>' after this node


class SubjectIndex(Generic[T]):
    """A trie of patterns mapping each subject to the values registered under matching patterns.

    Lookups are cached per subject until the index changes, so publishing to a known
    subject costs one dict lookup.

    >>> idx: SubjectIndex[str] = SubjectIndex()
    >>> k = idx.add("chat.*.msg", "a"); k2 = idx.add("chat.>", "b")
    >>> sorted(idx.lookup("chat.lobby.msg"))
    ['a', 'b']
    """

    def __init__(self) -> None:
        self._root: _Node[T] = _Node()
        self._keys = 0
        self._where: dict[int, tuple[list[str], bool]] = {}
        self._cache: dict[str, tuple[T, ...]] = {}

    def __len__(self) -> int:
        return len(self._where)

    @property
    def resolved(self) -> Mapping[str, tuple[T, ...]]:
        """Subjects looked up since the index last changed, each mapped to what
        :meth:`lookup` returned for it: a live, read-only view.

        Why it exists: ``index.resolved.get(subject)`` answers a repeated lookup with one
        C-level dict lookup and no Python call, which is what a broker's publish path
        needs. ``None`` means "not resolved yet": call :meth:`lookup`.

        >>> idx: SubjectIndex[str] = SubjectIndex()
        >>> _ = idx.add("a.*", "x")
        >>> idx.resolved.get("a.b"), idx.lookup("a.b"), idx.resolved.get("a.b")
        (None, ('x',), ('x',))
        """
        return self._cache

    def add(self, pattern: str, value: T) -> int:
        """Register ``value`` under ``pattern``; returns a key for :meth:`remove`."""
        tokens = _check(pattern, wildcards=True)
        full = tokens[-1] == ">"
        path = tokens[:-1] if full else tokens
        node = self._root
        for tok in path:
            nxt = node.children.get(tok)
            if nxt is None:
                nxt = node.children[tok] = _Node()
            node = nxt
        self._keys += 1
        key = self._keys
        (node.full if full else node.here)[key] = value
        self._where[key] = (path, full)
        self._cache.clear()
        return key

    def remove(self, key: int) -> None:
        """Unregister; unknown keys are ignored. Empty branches are pruned."""
        where = self._where.pop(key, None)
        if where is None:
            return
        path, full = where
        trail = [self._root]
        for tok in path:
            trail.append(trail[-1].children[tok])
        node = trail[-1]
        (node.full if full else node.here).pop(key, None)
        for i in range(len(path) - 1, -1, -1):
            n = trail[i + 1]
            if n.children or n.here or n.full:
                break
            del trail[i].children[path[i]]
        self._cache.clear()

    def lookup(self, subject: str) -> tuple[T, ...]:
        """Values registered under patterns matching ``subject``, in registration order."""
        hit = self._cache.get(subject)
        if hit is not None:
            return hit
        found: dict[int, T] = {}
        self._walk(self._root, subject.split("."), 0, found)
        result = tuple(found[k] for k in sorted(found))
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[subject] = result
        return result

    def _walk(self, node: _Node[T], tokens: list[str], i: int, out: dict[int, T]) -> None:
        if i == len(tokens):
            out.update(node.here)
            return
        if node.full:
            out.update(node.full)
        for key in (tokens[i], "*"):
            child = node.children.get(key)
            if child is not None:
                self._walk(child, tokens, i + 1, out)

    def values(self) -> Iterator[T]:
        stack = [self._root]
        while stack:
            n = stack.pop()
            yield from n.here.values()
            yield from n.full.values()
            stack.extend(n.children.values())
