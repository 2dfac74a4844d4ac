"""The ``rxstreams`` command line: ``serve``, ``demo``, ``tail``, ``publish`` and ``worker``.

``tail``/``publish`` live in ``adapters.client.cli_commands`` and ``worker`` in
``adapters.brokers.worker``; they are imported only when used, so ``serve`` stays light.

>>> args = build_parser().parse_args(["serve", "mymod:make", "--port", "9000"])
>>> args.command, args.target, args.host, args.port, args.broker
('serve', 'mymod:make', '127.0.0.1', 9000, None)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web
from reactivex import Observable

__all__ = ["build_parser", "load_target", "main", "resolve_broker", "serve_app"]


def resolve_broker(url: str | None) -> Any:
    """A broker for ``--broker URL``: ``memory://`` (or nothing) is an embedded MemoryBroker;
    anything else goes through ``adapters.brokers.from_url``.

    >>> type(resolve_broker(None)).__name__
    'MemoryBroker'
    """
    if url is None or url.startswith("memory://"):
        from streams import MemoryBroker

        return MemoryBroker()
    try:
        from adapters.brokers import from_url
    except ImportError as exc:
        raise SystemExit(
            f"rxstreams: --broker {url}: broker adapters unavailable ({exc})"
        ) from None
    return from_url(url)


def load_target(target: str) -> Any:
    """Import ``MODULE:NAME`` and return the attribute (called if it is a factory).

    >>> load_target("streams:MemoryBroker").__class__.__name__
    'MemoryBroker'
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise SystemExit(f"rxstreams: expected MODULE:FACTORY, got {target!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"rxstreams: cannot import {module_name!r}: {exc}") from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise SystemExit(f"rxstreams: {module_name!r} has no attribute {attr!r}") from None
    return obj() if callable(obj) and not isinstance(obj, Observable) else obj


def app_for(obj: Any, broker_url: str | None, subject: str | None) -> web.Application:
    """An application for what a factory returned: an app, a broker or an Observable."""
    from adapters.server import create_app, expose

    if isinstance(obj, web.Application):
        return obj
    if isinstance(obj, Observable):
        app = create_app(resolve_broker(broker_url))
        expose(app, subject, obj)
        return app
    if hasattr(obj, "subscribe") and hasattr(obj, "apublish"):
        return create_app(obj)
    raise SystemExit(
        f"rxstreams: the factory returned {type(obj).__name__}; "
        "expected an aiohttp Application, a broker or an Observable"
    )


async def serve_app(
    app: web.Application, host: str, port: int, announce: Callable[[str], None] = print
) -> None:
    """Serve until SIGINT/SIGTERM, then shut down gracefully: stop accepting, flush what is
    queued, close WebSockets with 1001, run cleanup."""
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    addr = runner.addresses[0]
    announce(f"rxstreams: serving on http://{addr[0]}:{addr[1]}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _announce(text: str) -> None:
    print(text, flush=True)


def cmd_serve(args: argparse.Namespace) -> int:
    sys.path.insert(0, ".")
    app = app_for(load_target(args.target), args.broker, args.subject)
    asyncio.run(serve_app(app, args.host, args.port, _announce))
    return 0


def demo_app(broker_url: str | None, rate: float) -> web.Application:
    """The interim demo: a server with a synthetic chat publisher in the background."""
    from adapters.server import create_app, expose
    from streams import synthetic

    app = create_app(resolve_broker(broker_url))
    expose(app, None, synthetic("chat", rate=rate))
    return app


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        demo = importlib.import_module("adapters.demo")
    except ImportError:
        demo = None
    if demo is not None and hasattr(demo, "run"):
        demo.run(host=args.host, port=args.port, broker_url=args.broker)
        return 0
    asyncio.run(serve_app(demo_app(args.broker, args.rate), args.host, args.port, _announce))
    return 0


def _lazy(module: str, func: str, what: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            mod = importlib.import_module(module)
            fn = getattr(mod, func)
        except (ImportError, AttributeError) as exc:
            print(f"rxstreams {what}: not available in this installation ({exc})", file=sys.stderr)
            return 2
        return int(fn(args) or 0)

    return run


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    p = argparse.ArgumentParser(
        prog="rxstreams", description="Reactive streams served live over HTTP and WebSocket."
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="serve a broker, an app or an Observable")
    s.add_argument("target", help="MODULE:FACTORY returning a broker, an app or an Observable")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--broker", help="memory:// (default), nats://host:port, redis://host:port")
    s.add_argument("--subject", help="subject for an Observable's items (default: their own)")
    s.set_defaults(func=cmd_serve)

    d = sub.add_parser("demo", help="the chat demo with synthetic traffic")
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--port", type=int, default=8080)
    d.add_argument("--broker", help="memory:// (default), nats://host:port, redis://host:port")
    d.add_argument("--rate", type=float, default=5.0, help="synthetic messages per second")
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("tail", help="print a live stream")
    t.add_argument("url", help="http(s)://host:port[/events/PATTERN] or ws(s)://host:port/ws")
    t.add_argument("--format", choices=("sse", "ndjson", "ws"), default=None)
    t.add_argument("--since", help="resume after this position")
    t.add_argument("--pattern", default=None, help="subject pattern (default: >)")
    t.add_argument("--token", help="JWT (default: $RXSTREAMS_TOKEN)")
    t.set_defaults(func=_lazy("adapters.client.cli_commands", "tail", "tail"))

    pub = sub.add_parser("publish", help="publish JSON or an NDJSON file")
    pub.add_argument("subject")
    pub.add_argument("--to", required=True, help="server URL, e.g. http://127.0.0.1:8080")
    src = pub.add_mutually_exclusive_group()
    src.add_argument("--file", help="NDJSON file ('-' for stdin)")
    src.add_argument("--data", help="one JSON value")
    pub.add_argument("--type", help="CloudEvents type of the events")
    pub.add_argument("--token", help="JWT (default: $RXSTREAMS_TOKEN)")
    pub.set_defaults(func=_lazy("adapters.client.cli_commands", "publish", "publish"))

    w = sub.add_parser("worker", help="run a pipeline as a consumer-group worker")
    w.add_argument("target", help="MODULE:PIPELINE")
    w.add_argument("--broker", required=True, help="nats://host:port or redis://host:port/db")
    w.add_argument("--group", default="workers", help="consumer group name")
    w.add_argument("--pattern", default=">", help="subject pattern to consume")
    w.set_defaults(func=_lazy("adapters.brokers.worker", "main", "worker"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rxstreams`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
