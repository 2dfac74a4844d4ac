"""Optional JWT auth, free of I/O: verify a token, then check subject patterns against claims.

The algorithm and key come from :class:`AuthConfig`, never from the token header
(PyJWT's ``algorithms=[...]`` pins it). Claims: ``sub`` (client name), ``subscribe``
and ``publish``: lists of subject patterns. A requested pattern is allowed only if an
allowed pattern *covers* it: every subject matching the request matches the allowance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt

from streams import SubjectError, validate_pattern

from .errors import ProtocolError

__all__ = ["AuthConfig", "Claims", "authorize", "covers", "token_from", "verify_token"]


@dataclass(frozen=True)
class AuthConfig:
    """How tokens are checked. ``key`` is the HMAC secret or the public key (PEM).

    >>> AuthConfig(key="s3cret").algorithm
    'HS256'
    """

    key: str | bytes
    algorithm: str = "HS256"
    audience: str | None = None
    issuer: str | None = None
    leeway: float = 0.0


@dataclass(frozen=True)
class Claims:
    """What a verified token allows; ``ANYONE`` is used when auth is off."""

    sub: str | None = None
    subscribe: tuple[str, ...] = field(default=(">",))
    publish: tuple[str, ...] = field(default=(">",))


ANYONE = Claims()


def covers(allowed: str, requested: str) -> bool:
    """True if every subject matching ``requested`` also matches ``allowed``.

    >>> covers("chat.>", "chat.*.msg"), covers("chat.*.msg", "chat.>"), covers("*.b", "a.b")
    (True, False, True)
    >>> covers("chat.*", "chat.>"), covers(">", "x.>")
    (False, True)
    """
    a = allowed.split(".")
    r = requested.split(".")
    for i, tok in enumerate(a):
        if tok == ">":
            return len(r) > i
        if i >= len(r):
            return False
        want = r[i]
        if want == ">":
            return False
        if tok == "*":
            continue
        if want != tok:
            return False
    return len(a) == len(r)


def _patterns(claims: Mapping[str, Any], name: str) -> tuple[str, ...]:
    raw = claims.get(name, [])
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise ProtocolError("unauthorized", f"claim {name!r} must be a list of patterns")
    out = []
    for p in raw:
        try:
            out.append(validate_pattern(p))
        except SubjectError as exc:
            raise ProtocolError("unauthorized", f"claim {name!r}: {exc}") from None
    return tuple(out)


def verify_token(token: str | None, config: AuthConfig) -> Claims:
    """Decode and verify ``token``; raise ``unauthorized`` when missing, expired or invalid.

    >>> cfg = AuthConfig(key="k" * 32)
    >>> tok = jwt.encode({"sub": "ada", "subscribe": ["chat.>"]}, "k" * 32, algorithm="HS256")
    >>> verify_token(tok, cfg)
    Claims(sub='ada', subscribe=('chat.>',), publish=())
    """
    if not token:
        raise ProtocolError(
            "unauthorized", "a token is required (Authorization: Bearer or ?token=)"
        )
    try:
        claims = jwt.decode(
            token,
            config.key,
            algorithms=[config.algorithm],
            audience=config.audience,
            issuer=config.issuer,
            leeway=config.leeway,
        )
    except jwt.ExpiredSignatureError:
        raise ProtocolError("unauthorized", "token expired") from None
    except jwt.PyJWTError as exc:
        raise ProtocolError("unauthorized", f"invalid token: {exc}") from None
    sub = claims.get("sub")
    return Claims(
        sub=sub if isinstance(sub, str) else None,
        subscribe=_patterns(claims, "subscribe"),
        publish=_patterns(claims, "publish"),
    )


def authorize(claims: Claims, action: str, pattern: str) -> None:
    """Raise ``forbidden`` unless ``claims`` allow ``action`` (subscribe/publish) on ``pattern``.

    >>> authorize(Claims(subscribe=("chat.>",)), "subscribe", "chat.lobby.msg")
    >>> authorize(Claims(subscribe=("chat.>",)), "subscribe", ">")
    Traceback (most recent call last):
    ...
    adapters.server.errors.ProtocolError: token does not allow subscribe on '>'
    """
    allowed: Sequence[str] = claims.subscribe if action == "subscribe" else claims.publish
    if not any(covers(a, pattern) for a in allowed):
        raise ProtocolError(
            "forbidden", f"token does not allow {action} on {pattern!r}", subject=pattern
        )


def token_from(authorization: str | None, query_token: str | None) -> str | None:
    """The bearer token from the ``Authorization`` header, else from ``?token=``.

    >>> token_from("Bearer abc", None), token_from(None, "xyz"), token_from("Basic q", None)
    ('abc', 'xyz', None)
    """
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return query_token or None
