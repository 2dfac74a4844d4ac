"""The app the README's client examples talk to: a server with synthetic chat traffic."""

from __future__ import annotations

from aiohttp import web

from adapters.server import create_app, expose
from streams import MemoryBroker, Retention, synthetic


def make() -> web.Application:
    app = create_app(MemoryBroker(Retention(max_per_subject=None)))
    expose(app, None, synthetic("chat", rate=100))
    return app
