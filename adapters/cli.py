"""The ``rxstreams`` command line: ``serve``, ``demo``, ``tail``, ``publish`` and ``worker``.

``tail``/``publish`` live in ``adapters.client.cli_commands`` and ``worker`` in
``adapters.brokers.worker``; they are imported only when used, so ``serve`` stays light.

Bad arguments end with one line on stderr and exit status 2, a failure while running (a
port in use, a broker that does not answer) with exit status 1; set ``RXSTREAMS_DEBUG=1``
for the traceback.

>>> args = build_parser().parse_args(["serve", "mymod:make", "--port", "9000"])
>>> args.command, args.target, args.host, args.port, args.broker
('serve', 'mymod:make', '127.0.0.1', 9000, None)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web
from reactivex import Observable

__all__ = ["CliError", "build_parser", "load_target", "main", "resolve_broker", "serve_app"]


class CliError(Exception):
    """A failure reported as one line on stderr; ``status`` 2 for bad arguments, 1 at run time.

    >>> CliError("no such module", 2).status
    2
    """

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def resolve_broker(url: str | None) -> Any:
    """A broker for ``--broker URL``: ``memory://`` (or nothing) is an embedded MemoryBroker;
    anything else goes through ``adapters.brokers.from_url``.

    >>> type(resolve_broker(None)).__name__
    'MemoryBroker'
    >>> resolve_broker("bogus://x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    adapters.cli.CliError: --broker bogus://x: unsupported broker URL 'bogus://x'...
    """
    if url is None or url == "memory://":
        from streams import MemoryBroker

        return MemoryBroker()
    try:
        from adapters.brokers import from_url
    except ImportError as exc:
        raise CliError(f"--broker {url}: broker adapters unavailable ({exc})") from None
    try:
        return from_url(url)
    except ValueError as exc:  # BrokerURLError
        raise CliError(f"--broker {url}: {exc}") from None


def load_target(target: str) -> Any:
    """Import ``MODULE:NAME`` and return the attribute (called if it is a factory).

    >>> load_target("streams:MemoryBroker").__class__.__name__
    'MemoryBroker'
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise CliError(f"expected MODULE:FACTORY, got {target!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"cannot import {module_name!r}: {exc}") from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise CliError(f"{module_name!r} has no attribute {attr!r}") from None
    return obj() if callable(obj) and not isinstance(obj, Observable) else obj


def app_for(obj: Any, broker_url: str | None, subject: str | None) -> web.Application:
    """An application for what a factory returned: an app, a broker or an Observable.

    ``--broker`` and ``--subject`` apply to an Observable only: an app or a broker brings
    its own, so giving them is an error rather than silently ignored.
    """
    from adapters.server import create_app, expose

    if isinstance(obj, Observable):
        app = create_app(resolve_broker(broker_url))
        expose(app, subject, obj)
        return app
    is_app = isinstance(obj, web.Application)
    if not is_app and not (hasattr(obj, "subscribe") and hasattr(obj, "apublish")):
        raise CliError(
            f"the factory returned {type(obj).__name__}; "
            "expected an aiohttp Application, a broker or an Observable"
        )
    what = "an aiohttp Application" if is_app else f"a broker ({type(obj).__name__})"
    for flag, value in (("--broker", broker_url), ("--subject", subject)):
        if value is not None:
            raise CliError(
                f"{flag} applies to a factory returning an Observable; this one returned "
                f"{what}: configure it in the factory, or drop the target to serve --broker"
            )
    return obj if is_app else create_app(obj)


async def serve_app(
    app: web.Application, host: str, port: int, announce: Callable[[str], None] = print
) -> None:
    """Serve until SIGINT/SIGTERM, then shut down gracefully: stop accepting, flush what is
    queued, close WebSockets with 1001, run cleanup."""
    from adapters.server.serving import EdgeRunner  # header timeout, JSON parse errors

    runner = EdgeRunner(app, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", 1) from None
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
    if args.target is None:  # serve the --broker (default: an embedded one) as it is
        from adapters.server import create_app

        app = create_app(resolve_broker(args.broker))
    else:
        app = app_for(load_target(args.target), args.broker, args.subject)
    asyncio.run(serve_app(app, args.host, args.port, _announce))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from adapters.demo import run

    if args.broker is not None:
        _check_broker_url(args.broker)
    try:
        run(host=args.host, port=args.port, broker_url=args.broker)
    except OSError as exc:
        raise CliError(
            f"cannot serve the demo on {args.host}:{args.port}: {exc.strerror or exc}", 1
        ) from None
    return 0


def _check_broker_url(url: str) -> None:
    from adapters.brokers.url import parse_broker_url

    try:
        parse_broker_url(url)
    except ValueError as exc:
        raise CliError(f"--broker {url}: {exc}") from None


def cmd_worker(args: argparse.Namespace) -> int:
    """``rxstreams worker``: the target and broker URL are checked before anything runs."""
    try:
        from adapters.brokers import worker
    except ImportError as exc:
        raise CliError(f"worker: not available in this installation ({exc})") from None
    sys.path.insert(0, ".")
    _check_broker_url(args.broker)
    try:
        worker.load_pipeline(args.target)
    except (ImportError, AttributeError, ValueError) as exc:
        raise CliError(f"cannot load {args.target!r}: {exc}") from None
    return int(worker.main(args) or 0)


def _port(text: str) -> int:
    """A TCP port for ``--port`` (0 picks a free one).

    >>> _port("8080"), _port("0")
    (8080, 0)
    """
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0-65535)")
    return port


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line (with a pointer to ``--help``), exit status 2."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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
    p = _Parser(
        prog="rxstreams", description="Reactive streams served live over HTTP and WebSocket."
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="serve a broker, an app or an Observable")
    s.add_argument(
        "target",
        nargs="?",
        help="MODULE:FACTORY returning a broker, an app or an Observable "
        "(default: serve the --broker)",
    )
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=_port, default=8080)
    s.add_argument(
        "--broker",
        help="memory:// (default), nats://host:port, redis://host:port; "
        "with a target, only for an Observable",
    )
    s.add_argument("--subject", help="subject for an Observable's items (default: their own)")
    s.set_defaults(func=cmd_serve)

    d = sub.add_parser("demo", help="the chat demo with synthetic traffic")
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--port", type=_port, default=8080)
    d.add_argument("--broker", help="memory:// (default), nats://host:port, redis://host:port")
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
    w.set_defaults(func=cmd_worker)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rxstreams`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        print(f"rxstreams {args.command}: {exc}", file=sys.stderr)
        return exc.status
    except Exception as exc:
        if os.environ.get("RXSTREAMS_DEBUG"):
            raise
        print(
            f"rxstreams {args.command}: {type(exc).__name__}: {exc} "
            "(RXSTREAMS_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
