"""The ``rxstreams`` command line: serve, demo, tail, publish, worker, doctor.

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

import adapters
from streams.errors import RxStreamsError

if getattr(adapters, "__distribution__", None) != "rxstreams":  # see adapters/__init__.py
    from .doctor import not_ours

    raise ImportError(not_ours(adapters))

__all__ = ["CliError", "build_parser", "load_target", "main", "resolve_broker", "serve_app"]


class CliError(RxStreamsError):
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
        from streams import MemoryBroker, Retention

        return MemoryBroker(Retention.for_server())
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


def app_for(
    obj: Any, broker_url: str | None, subject: str | None, publish_rate: float | None = None
) -> web.Application:
    """An application for what a factory returned: an app, a broker or an Observable.

    ``--broker`` and ``--subject`` apply to an Observable only: an app or a broker brings
    its own, so giving them is an error rather than silently ignored; ``--publish-rate``
    likewise does not apply to an app.
    """
    from adapters.server import create_app, expose

    if isinstance(obj, Observable):
        app = create_app(resolve_broker(broker_url), config=_config(publish_rate))
        expose(app, subject, obj)
        return app
    is_app = isinstance(obj, web.Application)
    if not is_app and not (hasattr(obj, "subscribe") and hasattr(obj, "apublish")):
        raise CliError(
            f"the factory returned {type(obj).__name__}; "
            "expected an aiohttp Application, a broker or an Observable"
        )
    what = "an aiohttp Application" if is_app else f"a broker ({type(obj).__name__})"
    if is_app and publish_rate is not None:
        raise CliError(
            "--publish-rate applies to a server this command builds; this factory returned "
            "an aiohttp Application: set ServerConfig(publish_rate=...) in it"
        )
    for flag, value in (("--broker", broker_url), ("--subject", subject)):
        if value is not None:
            raise CliError(
                f"{flag} applies to a factory returning an Observable; this one returned "
                f"{what}: configure it in the factory, or drop the target to serve --broker"
            )
    return obj if is_app else create_app(obj, config=_config(publish_rate))


async def serve_app(
    app: web.Application,
    host: str,
    port: int,
    announce: Callable[[str], None] = print,
    message: str = "rxstreams: serving on {url}",
) -> None:
    """Serve until SIGINT/SIGTERM, then shut down gracefully: stop accepting, flush what is
    queued, close WebSockets with 1001, run cleanup.

    ``announce(message.format(url=...))`` runs once the socket listens, with the bound
    port (so ``port=0`` announces the one picked)."""
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
    announce(message.format(url=f"http://{addr[0]}:{addr[1]}"))
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


# Bulk uploads to a server on this machine should not crawl (ServerConfig's 1000/s is
# meant for public endpoints); --publish-rate changes it.
SERVE_PUBLISH_RATE = 20_000.0


def _config(publish_rate: float | None) -> Any:
    from adapters.server import ServerConfig

    rate = publish_rate or SERVE_PUBLISH_RATE
    return ServerConfig(publish_rate=rate, publish_burst=max(rate, 1000.0))


def cmd_serve(args: argparse.Namespace) -> int:
    sys.path.insert(0, ".")
    rate = getattr(args, "publish_rate", None)
    if args.target is None:  # serve the --broker (default: an embedded one) as it is
        from adapters.server import create_app

        app = create_app(resolve_broker(args.broker), config=_config(rate))
    else:
        app = app_for(load_target(args.target), args.broker, args.subject, rate)
    from adapters.server.loop import run  # uvloop when installed (RXSTREAMS_LOOP chooses)

    run(serve_app(app, args.host, args.port, _announce))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from adapters.demo import run

    if args.broker is not None:
        _check_broker_url(args.broker)
    try:
        run(
            host=args.host,
            port=args.port,
            broker_url=args.broker,
            bots=getattr(args, "bots", 0),
            tokens=getattr(args, "tokens", True),
        )
    except OSError as exc:
        raise CliError(
            f"cannot serve the demo on {args.host}:{args.port}: {exc.strerror or exc}", 1
        ) from None
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """Name each other installed distribution providing ``streams``/``operators``/``adapters``."""
    from .doctor import conflicts, report

    lines, status = report(conflicts())
    for line in lines:
        print(f"rxstreams doctor: {line}")
    return status


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


class _Help(argparse.HelpFormatter):
    """Help that shows each option's default (unless it has none or says it already).

    >>> "(default: 8080)" in build_parser()._subparsers._group_actions[0].choices[
    ...     "serve"].format_help()
    True
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        quiet = action.default in (None, False, argparse.SUPPRESS) or action.nargs == 0
        if quiet or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


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


def _version() -> str:
    """The installed distribution's version (the source tree's when not installed)."""
    from importlib import metadata

    try:
        return metadata.version("rxstreams")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _positive(text: str) -> float:
    """A positive number for rates.

    >>> _positive("2.5")
    2.5
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not positive")
    return value


def _count(text: str) -> int:
    """A count >= 0.

    >>> _count("3")
    3
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


PUBLISH_RATE_HELP = (
    "events per second each connection may publish; a request of more events than this "
    "is refused (413), more per second are answered 429 with Retry-After"
)
BROKERS = "memory:// (embedded, the default), nats://host:port, redis://host:port/db"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    p = _Parser(
        prog="rxstreams",
        description="Reactive streams served live over HTTP and WebSocket.",
        formatter_class=_Help,
    )
    p.add_argument("--version", action="version", version=f"rxstreams {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=description, formatter_class=_Help)

    s = command(
        "serve",
        "serve a broker, an app or an Observable",
        "Serve the wire protocol (SSE, NDJSON, long-poll, WebSocket, ingest) for a broker, an "
        "aiohttp app or an Observable, until SIGINT/SIGTERM.",
    )
    s.add_argument(
        "target",
        nargs="?",
        help="MODULE:FACTORY returning a broker, an app or an Observable "
        "(default: serve the --broker as it is)",
    )
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    s.add_argument("--port", type=_port, default=8080, help="TCP port; 0 picks a free one")
    s.add_argument("--broker", help=f"{BROKERS}; with a target, only for an Observable")
    s.add_argument("--subject", help="subject for an Observable's items (default: their own)")
    s.add_argument(
        "--publish-rate",
        type=_positive,
        default=None,
        metavar="EVENTS",
        help=f"{PUBLISH_RATE_HELP} (default: {SERVE_PUBLISH_RATE:g}; not for a target "
        "returning an app, which brings its own ServerConfig)",
    )
    s.set_defaults(func=cmd_serve)

    d = command(
        "demo",
        "the live chat demo, with synthetic users",
        "The live chat and event firehose on the embedded broker (or --broker). Each "
        "nickname gets a token allowing its own notices (signed with $RXSTREAMS_DEMO_SECRET "
        "when set, so several demos on one broker share them); --bots synthetic users keep "
        "the rooms, statistics and firehose alive.",
    )
    d.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    d.add_argument("--port", type=_port, default=8080, help="TCP port; 0 picks a free one")
    d.add_argument("--broker", help=BROKERS)
    d.add_argument(
        "--bots",
        type=_count,
        default=3,
        metavar="N",
        help="synthetic users chatting in #lobby and #random (at most 7; 0: none)",
    )
    d.add_argument(
        "--no-tokens",
        dest="tokens",
        action="store_false",
        help="no per-nickname tokens: every page and client may read and publish everything",
    )
    d.set_defaults(func=cmd_demo)

    t = command(
        "tail",
        "print a live stream as JSON lines",
        "Print each event of a live stream as one JSON line on stdout until SIGINT (Ctrl-C) "
        "or SIGTERM. Reconnects and resumes by itself; connection state, gaps and errors "
        "go to stderr. Quote patterns in the URL ('…/events/chat.>') or write > as %3E.",
    )
    t.add_argument(
        "url",
        help="http(s)://host:port[/events/PATTERN] (SSE/NDJSON) or ws(s)://host:port/ws",
    )
    t.add_argument(
        "--format",
        choices=("sse", "ndjson", "ws"),
        default=None,
        help="wire format (default: ws for ws:// URLs, else sse)",
    )
    t.add_argument("--since", help="start after this position (default: live only)")
    t.add_argument(
        "--pattern",
        default=None,
        help="subject pattern when the URL has no /events/PATTERN path (default: >)",
    )
    t.add_argument("--token", help="JWT for a server with auth (default: $RXSTREAMS_TOKEN)")
    t.add_argument(
        "--quiet", action="store_true", help="no connecting/retrying/resumed lines on stderr"
    )
    t.set_defaults(func=_lazy("adapters.client.cli_commands", "tail", "tail"))

    pub = command(
        "publish",
        "publish JSON, a .json file or an NDJSON file",
        "Publish one JSON value or array (--data, or a .json file), or stream an NDJSON file "
        "(any other name, - for stdin) in requests of --chunk-lines events, with a progress "
        "bar (rate, ETA, throttling) on a terminal. Prints one JSON summary line.",
    )
    pub.add_argument("subject", help="subject to publish to, e.g. sensors.t1")
    pub.add_argument("--to", required=True, help="server URL, e.g. http://127.0.0.1:8080")
    src = pub.add_mutually_exclusive_group()
    src.add_argument(
        "--file",
        help="a .json file (one value, or an array published together) or an NDJSON file "
        "(any other name; - for stdin), streamed",
    )
    src.add_argument("--data", help='one JSON value or array, e.g. \'{"text": "hi"}\'')
    pub.add_argument("--type", help="CloudEvents type of the events (default: the server picks)")
    pub.add_argument("--token", help="JWT for a server with auth (default: $RXSTREAMS_TOKEN)")
    pub.add_argument(
        "--chunk-lines",
        type=lambda text: max(_count(text), 1),
        default=1000,
        metavar="N",
        help="NDJSON lines per request; keep it at most the server's publish burst "
        "(1000 in ServerConfig, 20000 under rxstreams serve/demo)",
    )
    pub.set_defaults(func=_lazy("adapters.client.cli_commands", "publish", "publish"))

    w = command(
        "worker",
        "run a pipeline as a consumer-group worker",
        "Run MODULE:PIPELINE over a networked broker as one member of a consumer group.",
    )
    w.add_argument("target", help="MODULE:PIPELINE")
    w.add_argument("--broker", required=True, help="nats://host:port or redis://host:port/db")
    w.add_argument("--group", default="workers", help="consumer group name")
    w.add_argument("--pattern", default=">", help="subject pattern to consume")
    w.add_argument("--key", help="keyed group: partition key (data.<path>, subject[i], type)")
    w.add_argument("--partitions", type=int, help="keyed group: number of partitions")
    w.add_argument("--to", help="keyed group: subject of outputs that carry none")
    w.add_argument("--checkpoint-every", type=int, default=1000, help="keyed group: events")
    w.add_argument("--lease", type=float, default=5.0, help="keyed group: lease seconds")
    w.set_defaults(func=cmd_worker)

    doc = command(
        "doctor",
        "check the installation for packages that clash with rxstreams' names",
        "Name every installed distribution other than rxstreams that provides a top-level "
        "streams, operators or adapters package (PyPI's adapters, AdapterHub, is one: "
        "installed together, one overwrites the other's files). Exit status 1 when there is "
        "one, 0 otherwise.",
    )
    doc.set_defaults(func=cmd_doctor)
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
