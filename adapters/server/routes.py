"""Which overflow policy a subscription gets, free of I/O.

A subscription's policy is, in order: the policy its client asked for (``?overflow=`` on
``/events``, ``"overflow"`` in a WebSocket ``subscribe``) if the server allows clients to
choose it (``ServerConfig.allowed_overflow``); else the first ``ServerConfig.overflow_routes``
entry whose pattern *covers* the subscription's pattern (every subject the subscription
can receive is in the route); else ``ServerConfig.overflow``.

A client has one ordered queue, so one policy. An SSE/NDJSON stream has one pattern. A
WebSocket connection with several subscriptions uses the one among theirs that loses
least (``disconnect``, then ``drop_oldest``, then ``latest_only``): sharing a connection
never makes a subscription silently lose events its own policy would have kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from streams import OverflowPolicy, SubjectError, validate_pattern

from .auth import covers
from .errors import ProtocolError

__all__ = ["CLIENT_POLICIES", "choose_policy", "connection_policy", "parse_routes"]

#: Policies a client queue supports, least lossy first.
CLIENT_POLICIES: Final = (
    OverflowPolicy.DISCONNECT,
    OverflowPolicy.DROP_OLDEST,
    OverflowPolicy.LATEST_ONLY,
)
_LOSS: Final = {p: i for i, p in enumerate(CLIENT_POLICIES)}

Routes = tuple[tuple[str, OverflowPolicy], ...]


def client_policy(value: object, what: str = "overflow") -> OverflowPolicy:
    """A policy a client queue supports, or ``ValueError``.

    >>> client_policy("latest_only")
    <OverflowPolicy.LATEST_ONLY: 'latest_only'>
    """
    try:
        policy = OverflowPolicy(value) if isinstance(value, str) else None
    except ValueError:
        policy = None
    if policy not in _LOSS:
        raise ValueError(f"{what} must be one of {', '.join(CLIENT_POLICIES)}, got {value!r}")
    assert policy is not None
    return policy


def parse_routes(routes: Mapping[str, OverflowPolicy | str] | Iterable[tuple[str, str]]) -> Routes:
    """Validated ``(pattern, policy)`` pairs, in the given order (first match wins).

    >>> parse_routes({"chat.*.typing": "latest_only"})
    (('chat.*.typing', <OverflowPolicy.LATEST_ONLY: 'latest_only'>),)
    >>> parse_routes({"a..b": "latest_only"})
    Traceback (most recent call last):
    ...
    ValueError: overflow_routes: 'a..b': pattern 'a..b' has an empty token
    """
    pairs = routes.items() if isinstance(routes, Mapping) else routes
    out = []
    for pattern, policy in pairs:
        try:
            validate_pattern(pattern)
        except SubjectError as exc:
            raise ValueError(f"overflow_routes: {pattern!r}: {exc}") from None
        out.append((pattern, client_policy(policy, f"overflow_routes[{pattern!r}]")))
    return tuple(out)


def choose_policy(
    pattern: str,
    requested: object,
    default: OverflowPolicy,
    routes: Routes = (),
    allowed: Iterable[OverflowPolicy] = (),
    ref: str | None = None,
) -> OverflowPolicy:
    """The policy of a subscription to ``pattern``; ``requested`` is the client's choice
    (``None`` for none), refused with ``bad_request`` unless in ``allowed``.

    >>> routes = parse_routes({"chat.*.typing": "latest_only", "metrics.>": "drop_oldest"})
    >>> d = OverflowPolicy.DISCONNECT
    >>> [choose_policy(p, None, d, routes).value for p in ("chat.a.typing", "metrics.x", "chat.>")]
    ['latest_only', 'drop_oldest', 'disconnect']
    >>> choose_policy("chat.>", "drop_oldest", d, routes, allowed=[d]).value
    Traceback (most recent call last):
    ...
    adapters.server.errors.ProtocolError: overflow 'drop_oldest' not allowed (allowed: disconnect)
    """
    if requested is not None:
        try:
            policy = client_policy(requested)
        except ValueError as exc:
            raise ProtocolError("bad_request", str(exc), field="overflow", ref=ref) from None
        allow = list(allowed)
        if policy not in allow:
            names = ", ".join(p.value for p in allow) or "none"
            raise ProtocolError(
                "bad_request",
                f"overflow {policy.value!r} not allowed (allowed: {names})",
                field="overflow",
                ref=ref,
                allowed=[p.value for p in allow],
            )
        return policy
    for route, policy in routes:
        if covers(route, pattern):
            return policy
    return default


def connection_policy(
    policies: Iterable[OverflowPolicy], default: OverflowPolicy
) -> OverflowPolicy:
    """The policy of a queue shared by subscriptions: the least lossy of theirs.

    >>> L, D = OverflowPolicy.LATEST_ONLY, OverflowPolicy.DROP_OLDEST
    >>> connection_policy([L, D], OverflowPolicy.DISCONNECT).value
    'drop_oldest'
    >>> connection_policy([], L).value
    'latest_only'
    """
    return min(policies, key=_LOSS.__getitem__, default=default)
