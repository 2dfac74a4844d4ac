"""Per-nickname tokens for the demo, checked by the server's own auth.

The demo signs each nickname a JWT (:class:`adapters.server.AuthConfig`, HS256, a secret
made per run) whose claims allow exactly what that person may see and say:

- subscribe ``room.>`` (every room is public), ``stats.>`` and ``user.<nick>.>`` (their own
  notices: nobody else's refusals);
- publish ``chat.*.in.<nick>``: input to any room, under their own name only, so the
  pipeline can trust the subject's last token as the sender.

Nothing here does I/O; :mod:`adapters.demo.app` serves :meth:`DemoTokens.issue` on
``POST /demo/token``.

>>> tokens = DemoTokens(secret="k" * 32)
>>> grant = tokens.issue("ada")
>>> grant["subscribe"], grant["publish"]
(['room.>', 'stats.>', 'user.ada.>'], ['chat.*.in.ada'])
>>> from adapters.server.auth import verify_token
>>> verify_token(grant["token"], tokens.config).sub
'ada'
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import jwt

from adapters.server import AuthConfig

from .pipeline import NAME

__all__ = ["DemoTokens", "claims_for"]


def claims_for(nick: str) -> dict[str, list[str]]:
    """The subject patterns a nickname's token allows.

    >>> claims_for("bob")["publish"]
    ['chat.*.in.bob']
    """
    return {
        "subscribe": ["room.>", "stats.>", f"user.{nick}.>"],
        "publish": [f"chat.*.in.{nick}"],
    }


@dataclass(frozen=True)
class DemoTokens:
    """Signs tokens for nicknames (and one full-access token for command-line clients).

    ``ttl`` is how long a nickname's token is valid; the page asks for a new one when it
    reconnects, so a long chat never sees it expire.
    """

    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    ttl: float = 12 * 3600.0

    @property
    def config(self) -> AuthConfig:
        """What the server checks tokens with."""
        return AuthConfig(key=self.secret)

    def issue(self, nick: str, now: float | None = None) -> dict[str, Any]:
        """A token for ``nick`` and what it allows; ``ValueError`` for a bad nickname.

        >>> DemoTokens(secret="k" * 32).issue("no spaces")
        Traceback (most recent call last):
        ...
        ValueError: a nickname is 1-24 letters, digits, _ or -
        """
        if not NAME.fullmatch(nick):
            raise ValueError("a nickname is 1-24 letters, digits, _ or -")
        now = time.time() if now is None else now
        claims: dict[str, Any] = {"sub": nick, "exp": int(now + self.ttl), **claims_for(nick)}
        token = jwt.encode(claims, self.secret, algorithm="HS256")
        return {"nick": nick, "token": token, "expires": claims["exp"], **claims_for(nick)}

    def operator(self) -> str:
        """A token allowing everything, for ``rxstreams tail``/``publish`` against the demo
        (valid as long as this demo runs: the secret dies with it)."""
        claims = {"sub": "operator", "subscribe": [">"], "publish": [">"]}
        return jwt.encode(claims, self.secret, algorithm="HS256")
