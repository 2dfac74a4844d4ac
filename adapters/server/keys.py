"""The I/O around :func:`~.auth.verify_token`: which key verifies a token.

A static ``AuthConfig.key`` needs none. A JWKS file is read once, when the verifier is
made (at app creation: a missing or malformed file fails startup). A JWKS URL is fetched
by PyJWT's ``PyJWKClient`` (cached for ``AuthConfig.jwks_lifespan`` seconds, fetched
again for an unknown ``kid`` at most once per ``AuthConfig.jwks_cooldown``) in a worker
thread, since it blocks; an identity provider that does not answer makes the request
``503 unavailable``, never a stall of the loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import jwt

from .auth import AuthConfig, Claims, require_token, verify_token
from .errors import ProtocolError

__all__ = ["TokenVerifier"]


class TokenVerifier:
    """Verifies tokens for one :class:`AuthConfig`.

    >>> import asyncio
    >>> v = TokenVerifier(AuthConfig(key="k" * 32))
    >>> tok = jwt.encode({"sub": "ada", "exp": 4102444800}, "k" * 32, algorithm="HS256")
    >>> asyncio.run(v.verify(tok)).exp
    4102444800.0
    """

    def __init__(self, config: AuthConfig) -> None:
        self.config = config
        self._set: jwt.PyJWKSet | None = None
        self._client: jwt.PyJWKClient | None = None
        source = config.jwks
        if source is None:
            return
        if source.startswith(("http://", "https://")):
            self._client = jwt.PyJWKClient(
                source,
                cache_jwk_set=True,
                lifespan=config.jwks_lifespan,
                cooldown_duration=config.jwks_cooldown,
                timeout=10,
            )
            return
        try:
            self._set = jwt.PyJWKSet.from_json(Path(source).read_text())
        except (OSError, jwt.PyJWTError, ValueError) as exc:
            raise ValueError(f"AuthConfig.jwks: cannot use {source!r}: {exc}") from None

    async def verify(self, token: str | None) -> Claims:
        """The claims of ``token``; ``unauthorized`` (or ``unavailable``) otherwise."""
        if self.config.jwks is None:
            return verify_token(token, self.config)
        token = require_token(token)
        return verify_token(token, self.config, await self._key(token))

    async def _key(self, token: str) -> Any:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise ProtocolError("unauthorized", f"invalid token: {exc}") from None
        if self._set is not None:
            return self._from_set(self._set, kid)
        assert self._client is not None
        try:
            signing = await asyncio.to_thread(self._client.get_signing_key_from_jwt, token)
        except jwt.PyJWKClientConnectionError as exc:
            raise ProtocolError(
                "unavailable", f"the key set could not be fetched: {exc}", retry_after=1.0
            ) from None
        except jwt.PyJWTError as exc:
            raise ProtocolError("unauthorized", f"invalid token: {exc}") from None
        return signing.key

    @staticmethod
    def _from_set(keys: jwt.PyJWKSet, kid: object) -> Any:
        if kid is None:
            if len(keys.keys) == 1:
                return keys.keys[0].key
            raise ProtocolError("unauthorized", "invalid token: no 'kid' in its header")
        for jwk in keys.keys:
            if jwk.key_id == kid:
                return jwk.key
        raise ProtocolError("unauthorized", f"invalid token: no key with kid {kid!r}")
