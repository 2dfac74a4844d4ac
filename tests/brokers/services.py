"""Find the real NATS and Redis servers the broker tests need.

With ``CI`` set a server that does not answer fails the run (``.ci/run`` starts them);
elsewhere the tests that need it are skipped with the reason.
"""

from __future__ import annotations

import os
import socket

import pytest

NATS_URL = os.environ.get("RXSTREAMS_NATS_URL", "nats://127.0.0.1:4222")
REDIS_URL = os.environ.get("RXSTREAMS_REDIS_URL", "redis://127.0.0.1:6379/0")

_GREETING = {"nats": (b"", b"INFO "), "redis": (b"PING\r\n", b"+PONG")}
_seen: dict[str, str | None] = {}


def _host_port(url: str) -> tuple[str, int]:
    netloc = url.split("://", 1)[1].split("/", 1)[0]
    host, _, port = netloc.rpartition(":")
    return host, int(port)


def probe(kind: str, url: str) -> str | None:
    """``None`` when the server answers its protocol greeting, else why not."""
    if kind not in _seen:
        send, expect = _GREETING[kind]
        try:
            with socket.create_connection(_host_port(url), timeout=1.0) as s:
                s.settimeout(1.0)
                if send:
                    s.sendall(send)
                reply = s.recv(64)
            _seen[kind] = None if reply.startswith(expect) else f"unexpected reply {reply[:20]!r}"
        except OSError as exc:
            _seen[kind] = str(exc) or type(exc).__name__
    return _seen[kind]


def require(kind: str) -> str:
    """The server URL for ``kind`` ("nats" or "redis"); skip (or fail under CI) if absent."""
    url = NATS_URL if kind == "nats" else REDIS_URL
    why = probe(kind, url)
    if why is not None:
        message = f"{kind} server at {url} is not answering ({why})"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI requires it (start it as docs/getting-started.md shows)")
        pytest.skip(f"{message}; start it to run the {kind} broker tests")
    return url
