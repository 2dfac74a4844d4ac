"""Optional JWT auth, free of I/O: verify a token, then check subject patterns against claims.

The algorithm and key come from :class:`AuthConfig`, never from the token header
(PyJWT's ``algorithms=[...]`` pins it). Claims: ``sub`` (client name), ``subscribe``
and ``publish``: lists of subject patterns. A requested pattern is allowed only if an
allowed pattern *covers* it: every subject matching the request matches the allowance.

Keys: an HMAC secret or a PEM public key (``key``), or a JWKS document (``jwks``: a file
path or an ``https://`` URL, read by :mod:`adapters.server.keys`), as identity providers
publish them. :class:`AuthConfig` refuses at construction (server startup) an algorithm
PyJWT cannot verify and a key that does not fit the algorithm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import jwt

from streams import SubjectError, validate_pattern

from .errors import ProtocolError

__all__ = [
    "ALGORITHMS",
    "AuthConfig",
    "Claims",
    "allows",
    "authorize",
    "covers",
    "require_token",
    "token_from",
    "verify_token",
]


#: What identity providers issue (and PyJWT verifies with its ``crypto`` extra).
ALGORITHMS: Final = (
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
    "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip


@dataclass(frozen=True)
class AuthConfig:
    """How tokens are checked. ``key`` is the HMAC secret or the public key (PEM);
    ``jwks`` instead names a JWKS document (a file, or an ``http(s)://`` URL fetched and
    cached as PyJWT's ``PyJWKClient`` does), whose key is chosen by the token's ``kid``.
    ``algorithm`` is one algorithm or a tuple of them (a JWKS may hold RSA and EC keys).

    Unusable settings fail here, at startup, not as a 401 on every request:

    >>> AuthConfig(key="s3cret").algorithms
    ('HS256',)
    >>> AuthConfig(key="s3cret", algorithm="RS256")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: AuthConfig: the key does not fit RS256: Could not parse the provided public key.
    >>> AuthConfig(key="k", algorithm="none")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: AuthConfig: algorithm 'none' is not one of HS256, ...
    """

    key: str | bytes | None = None
    algorithm: str | tuple[str, ...] = "HS256"
    audience: str | None = None
    issuer: str | None = None
    leeway: float = 0.0
    jwks: str | None = None
    jwks_lifespan: float = 300.0  # seconds a fetched JWKS is cached (an unknown kid refetches)
    jwks_cooldown: float = 30.0  # at most one refetch per cooldown for unknown kids

    def __post_init__(self) -> None:
        names = (self.algorithm,) if isinstance(self.algorithm, str) else tuple(self.algorithm)
        if not names:
            raise ValueError("AuthConfig: at least one algorithm is required")
        for name in names:
            if name not in ALGORITHMS:
                raise ValueError(
                    f"AuthConfig: algorithm {name!r} is not one of {', '.join(ALGORITHMS)}"
                )
            if name not in jwt.algorithms.get_default_algorithms():
                raise ValueError(
                    f"AuthConfig: PyJWT cannot verify {name} here (install PyJWT[crypto])"
                )
        if (self.key is None) == (self.jwks is None):
            raise ValueError("AuthConfig: give exactly one of key= and jwks=")
        if self.key is not None:
            for name in names:
                try:
                    jwt.get_algorithm_by_name(name).prepare_key(self.key)
                except (jwt.InvalidKeyError, ValueError, TypeError) as exc:
                    raise ValueError(f"AuthConfig: the key does not fit {name}: {exc}") from None

    @property
    def algorithms(self) -> tuple[str, ...]:
        return (self.algorithm,) if isinstance(self.algorithm, str) else tuple(self.algorithm)


@dataclass(frozen=True)
class Claims:
    """What a verified token allows; ``ANYONE`` is used when auth is off."""

    sub: str | None = None
    subscribe: tuple[str, ...] = field(default=(">",))
    publish: tuple[str, ...] = field(default=(">",))
    exp: float | None = None  # the token's expiry (seconds since the epoch, leeway added)


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


def require_token(token: str | None) -> str:
    """``token`` itself, or ``unauthorized`` when there is none."""
    if not token:
        raise ProtocolError(
            "unauthorized", "a token is required (Authorization: Bearer or ?token=)"
        )
    return token


def verify_token(token: str | None, config: AuthConfig, key: Any = None) -> Claims:
    """Decode and verify ``token``; raise ``unauthorized`` when missing, expired or invalid.

    ``key`` is the verification key when it is not ``config.key`` (one from a JWKS).

    >>> cfg = AuthConfig(key="k" * 32)
    >>> tok = jwt.encode({"sub": "ada", "subscribe": ["chat.>"]}, "k" * 32, algorithm="HS256")
    >>> verify_token(tok, cfg)
    Claims(sub='ada', subscribe=('chat.>',), publish=(), exp=None)
    """
    token = require_token(token)
    verify_key: Any = key if key is not None else config.key
    try:
        claims = jwt.decode(
            token,
            verify_key,
            algorithms=list(config.algorithms),
            audience=config.audience,
            issuer=config.issuer,
            leeway=config.leeway,
        )
    except jwt.ExpiredSignatureError:
        raise ProtocolError("unauthorized", "token expired") from None
    except jwt.PyJWTError as exc:
        raise ProtocolError("unauthorized", f"invalid token: {exc}") from None
    sub = claims.get("sub")
    exp = claims.get("exp")
    return Claims(
        sub=sub if isinstance(sub, str) else None,
        subscribe=_patterns(claims, "subscribe"),
        publish=_patterns(claims, "publish"),
        exp=float(exp) + config.leeway if isinstance(exp, int | float) else None,
    )


def allows(claims: Claims, action: str, pattern: str) -> bool:
    """True if ``claims`` allow ``action`` (subscribe/publish) on ``pattern``.

    >>> allows(Claims(subscribe=("chat.>",)), "subscribe", "chat.x"), allows(Claims(), "x", "a")
    (True, False)
    """
    if action == "subscribe":
        allowed: Sequence[str] = claims.subscribe
    elif action == "publish":
        allowed = claims.publish
    else:
        return False
    return any(covers(a, pattern) for a in allowed)


def authorize(claims: Claims, action: str, pattern: str) -> None:
    """Raise ``forbidden`` unless ``claims`` allow ``action`` (subscribe/publish) on ``pattern``.

    >>> authorize(Claims(subscribe=("chat.>",)), "subscribe", "chat.lobby.msg")
    >>> authorize(Claims(subscribe=("chat.>",)), "subscribe", ">")
    Traceback (most recent call last):
    ...
    adapters.server.errors.ProtocolError: token does not allow subscribe on '>'
    """
    if not allows(claims, action, pattern):
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
