"""``rxstreams tail`` and ``rxstreams publish``: the command line's client half.

``adapters.cli`` parses the arguments and calls :func:`tail` or :func:`publish` with the
``argparse.Namespace``; each returns the exit code (0 ok, 1 failure, 2 bad arguments).
A token for a server with auth comes from ``args.token`` or ``$RXSTREAMS_TOKEN``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import orjson
from reactivex import Observable
from yarl import URL

from streams import Event, Position, PositionError

from .progress import Progress
from .protocol import GapNotice, ProtocolError, ServerError
from .publish import PublishError, events_url, publish_ndjson
from .publish import publish as publish_values
from .sources import ConnectionLost, ndjson_source, sse_source, websocket_source

__all__ = ["make_source", "publish", "tail"]

FORMATS = ("sse", "ndjson", "ws")


class UsageError(ValueError):
    """Arguments that cannot work; reported with exit code 2."""


def _token(args: argparse.Namespace) -> str | None:
    return getattr(args, "token", None) or os.environ.get("RXSTREAMS_TOKEN") or None


def _fail(message: str, err: TextIO | None = None) -> None:
    print(f"rxstreams: {message}", file=err or sys.stderr, flush=True)


def make_source(args: argparse.Namespace, on_gap: Any = None) -> Observable[Event]:
    """The source ``tail`` reads, from its arguments.

    The format is ``args.format`` if given, else ``ws`` for ``ws://``/``wss://`` URLs and
    ``sse`` otherwise. An HTTP URL without a path gets ``/events/{pattern}``; with
    ``--format ws`` an ``http://`` URL becomes ``ws://`` (and gets ``/ws`` if it has no path).

    >>> ns = argparse.Namespace(url="http://h:1", format=None, since=None, pattern="a.>")
    >>> isinstance(make_source(ns), Observable)
    True
    """
    url = URL(args.url)
    if url.scheme not in ("http", "https", "ws", "wss") or not url.host:
        raise UsageError(f"URL must be http(s):// or ws(s):// with a host, not {args.url!r}")
    fmt = getattr(args, "format", None) or ("ws" if url.scheme in ("ws", "wss") else "sse")
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    pattern = getattr(args, "pattern", None) or ">"
    since: str | None = getattr(args, "since", None) or None
    if since is not None:
        try:
            Position.parse(since)
        except PositionError as exc:
            raise UsageError(f"--since: {exc}") from None
    token = _token(args)
    if fmt == "ws":
        if url.scheme in ("http", "https"):
            url = url.with_scheme("wss" if url.scheme == "https" else "ws")
        if url.path in ("", "/"):
            url = url.with_path("/ws")
        return websocket_source(url, pattern, since, on_gap=on_gap, token=token)
    if url.scheme in ("ws", "wss"):
        raise UsageError(f"--format {fmt} needs an http(s):// URL")
    if url.path in ("", "/"):
        url = events_url(url, pattern)
    make = sse_source if fmt == "sse" else ndjson_source
    return make(url, since, on_gap=on_gap, token=token)


async def _tail(args: argparse.Namespace, out: BinaryIO, err: TextIO) -> int:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()

    def on_gap(notice: GapNotice) -> None:
        _fail(str(notice), err)

    def on_next(event: Event) -> None:
        out.write(event.encode() + b"\n")
        out.flush()

    def on_error(exc: Exception) -> None:
        if done.done():
            return
        if isinstance(exc, BrokenPipeError):
            _silence_stdout()
            done.set_result(0)  # the reader went away (| head): a normal end
            return
        _fail(_describe(exc), err)
        done.set_result(1)

    def on_completed() -> None:
        if not done.done():
            done.set_result(0)

    source = make_source(args, on_gap)
    subscription = source.subscribe(on_next, on_error, on_completed)
    try:
        return await done
    finally:
        subscription.dispose()
        await asyncio.sleep(0)  # let the cancelled task close its connection


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ServerError):
        body = orjson.dumps({"error": exc.body}).decode() if exc.body else ""
        return f"server error: {exc}" + (f"\n{body}" if body else "")
    if isinstance(exc, ConnectionLost | ProtocolError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def tail(args: argparse.Namespace) -> int:
    """Print each event of a live stream as one JSON line on stdout until Ctrl-C.

    Reconnects and resumes by itself; gap notices and errors go to stderr.
    """
    try:
        return asyncio.run(_tail(args, sys.stdout.buffer, sys.stderr))
    except UsageError as exc:
        _fail(str(exc))
        return 2
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        _silence_stdout()
        return 0


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again
    (the recipe in the Python docs for SIGPIPE)."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _load_json(args: argparse.Namespace) -> Any:
    """The value to publish from ``--data`` or a ``.json`` file."""
    data = getattr(args, "data", None)
    if data is not None:
        source, raw = "--data", data.encode()
    else:
        source, raw = args.file, Path(args.file).read_bytes()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"{source}: malformed JSON: {exc}") from None


def _is_ndjson(path: str) -> bool:
    """A ``.json`` file holds one value or array; anything else is NDJSON, streamed."""
    return Path(path).suffix.lower() != ".json"


async def _publish(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    base = URL(args.to)
    if base.scheme not in ("http", "https") or not base.host:
        raise UsageError(f"--to must be an http(s):// URL, not {args.to!r}")
    token, type_ = _token(args), getattr(args, "type", None)
    file = getattr(args, "file", None)
    data = getattr(args, "data", None)
    if (file is None) == (data is None):
        raise UsageError("give either --file or --data (one JSON value or array)")
    if file is not None and file != "-" and not Path(file).is_file():
        raise UsageError(f"--file: no such file: {file}")
    if file is not None and (file == "-" or _is_ndjson(file)):
        stream = sys.stdin.buffer if file == "-" else open(file, "rb")  # noqa: SIM115
        total = 0 if file == "-" else os.fstat(stream.fileno()).st_size
        bar = Progress(total, err)
        try:
            result = await publish_ndjson(
                base, args.subject, stream, type=type_, token=token, on_progress=bar.update,
                max_bytes=getattr(args, "chunk_bytes", None) or 256 * 1024,
            )  # fmt: skip
        finally:
            bar.finish()
            if stream is not sys.stdin.buffer:
                stream.close()
        summary = {
            "subject": args.subject,
            "count": result.count,
            "first": str(result.first) if result.first else None,
            "last": str(result.last) if result.last else None,
            "requests": result.requests,
        }
    else:
        value = _load_json(args)
        values = value if isinstance(value, list) else [value]
        if not values:
            raise UsageError("the JSON array is empty: nothing to publish")
        positions = await publish_values(base, args.subject, events=values, type=type_, token=token)
        summary = {
            "subject": args.subject,
            "count": len(positions),
            "positions": [str(p) for p in positions],
        }
    out.write(orjson.dumps(summary).decode() + "\n")
    out.flush()
    return 0


def publish(args: argparse.Namespace) -> int:
    """Publish ``--data`` (a JSON value or array), a ``.json`` file (the same), or any other
    file as NDJSON (``-`` for stdin), streamed in chunks with a progress bar on a terminal;
    print one JSON summary line with the positions or counts.

    A server error is printed with its JSON body; exit code 1.
    """
    try:
        return asyncio.run(_publish(args, sys.stdout, sys.stderr))
    except UsageError as exc:
        _fail(str(exc))
        return 2
    except PublishError as exc:
        where = f" (after {exc.accepted} accepted, last {exc.last})" if exc.accepted else ""
        _fail(f"{_describe(exc)}{where}")
        return 1
    except (ServerError, ProtocolError, OSError) as exc:
        _fail(_describe(exc))
        return 1
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130
