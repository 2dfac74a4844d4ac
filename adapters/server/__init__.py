"""The rxstreams server: any broker or observable served over SSE, NDJSON, long-poll and
WebSocket, as an aiohttp application you run alone or mount in your own.

>>> from aiohttp import web
>>> root = web.Application()
>>> _ = root.add_subapp("/live", create_app())
"""

from .app import BROKER, CONFIG, HUB, create_app, expose
from .auth import AuthConfig, Claims, covers
from .config import ServerConfig
from .errors import ProtocolError

__all__ = [
    "BROKER",
    "CONFIG",
    "HUB",
    "AuthConfig",
    "Claims",
    "ProtocolError",
    "ServerConfig",
    "covers",
    "create_app",
    "expose",
]
