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
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, BinaryIO, TextIO

import aiohttp
import orjson
from reactivex import Observable
from yarl import URL

from streams import Event, Position, PositionError
from streams.errors import InvalidInput

from .backoff import Backoff
from .progress import Progress
from .protocol import GapNotice, RemoteProtocolError, ServerError
from .publish import PublishRefused, events_url, publish_ndjson
from .publish import publish as publish_values
from .sources import ConnectionLost, ndjson_source, sse_source, websocket_source

__all__ = ["TailStatus", "make_source", "publish", "tail"]

FORMATS = ("sse", "ndjson", "ws")


class UsageError(InvalidInput):
    """Arguments that cannot work; reported with exit code 2."""


def _token(args: argparse.Namespace) -> str | None:
    return getattr(args, "token", None) or os.environ.get("RXSTREAMS_TOKEN") or None


def _fail(message: str, err: TextIO | None = None) -> None:
    print(f"rxstreams: {message}", file=err or sys.stderr, flush=True)


def make_source(
    args: argparse.Namespace,
    on_gap: Any = None,
    *,
    backoff: Backoff | None = None,
    session: aiohttp.ClientSession | None = None,
) -> Observable[Event]:
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
        return websocket_source(
            url, pattern, since, on_gap=on_gap, token=token, backoff=backoff, session=session
        )
    if url.scheme in ("ws", "wss"):
        raise UsageError(f"--format {fmt} needs an http(s):// URL")
    if url.path in ("", "/"):
        url = events_url(url, pattern)
    make = sse_source if fmt == "sse" else ndjson_source
    return make(url, since, on_gap=on_gap, token=token, backoff=backoff, session=session)


class TailStatus:
    """What ``tail`` says on stderr about its connection (the decisions, no I/O).

    ``connecting`` once at the start; ``retrying`` before each wait, with the last error;
    ``connected`` when an answer arrives: "connected" the first time, "resumed at
    <position>" after a failure (the last event printed), or "reconnected" if none was.

    >>> st = TailStatus("http://h/events/a")
    >>> st.connecting()
    'connecting to http://h/events/a …'
    >>> st.failed("Cannot connect to host h:80"); st.retrying(1.5)
    'Cannot connect to host h:80; retrying in 1.5 s'
    >>> st.delivered("5f2a-7"); st.connected()
    'resumed at 5f2a-7'
    >>> st.connected() is None  # nothing to say for the same connection twice
    True
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.position: str | None = None
        self.error: str | None = None
        self.ever_connected = False
        self.down = True

    def connecting(self) -> str:
        return f"connecting to {self.url} …"

    def failed(self, error: str) -> None:
        self.error = error

    def delivered(self, position: str | None) -> None:
        if position:
            self.position = position

    def retrying(self, delay: float) -> str:
        self.down = True
        why = self.error or "connection closed"
        self.error = None
        return f"{why}; retrying in {delay:.1f} s"

    def connected(self) -> str | None:
        if not self.down:
            return None
        self.down = False
        first, self.ever_connected = not self.ever_connected, True
        if first and self.position is None:
            return "connected"
        return f"resumed at {self.position}" if self.position else "reconnected"


@dataclass
class _ReportingBackoff(Backoff):
    """A :class:`Backoff` that tells ``report`` each delay it hands out."""

    report: Any = field(default=None, compare=False)

    def next_delay(self) -> float | None:
        delay = super().next_delay()
        if delay is not None and self.report is not None:
            self.report(delay)
        return delay

    def fresh(self) -> Backoff:
        return _ReportingBackoff(
            self.initial, self.maximum, self.factor, self.jitter, self.max_attempts, self.seed,
            self.rng,
            report=self.report,
        )  # fmt: skip


def _why(exc: BaseException) -> str:
    """A failed connection in a few words.

    >>> _why(aiohttp.ClientConnectorError(
    ...     SimpleNamespace(host="h", port=1, ssl=None), ConnectionRefusedError(111, "x")))
    'cannot connect to h:1 (Connection refused)'
    """
    if isinstance(exc, aiohttp.ClientConnectorError):
        errno = exc.os_error.errno
        reason = os.strerror(errno) if errno else str(exc.os_error)
        return f"cannot connect to {exc.host}:{exc.port} ({reason})"
    return str(exc) or type(exc).__name__


def _tracing(on_answer: Any, on_failure: Any) -> aiohttp.TraceConfig:
    """aiohttp tracing (public API) for "an answer came" and "the request failed"."""
    trace = aiohttp.TraceConfig()

    async def end(_s: Any, _c: SimpleNamespace, params: Any) -> None:
        on_answer(params.response.status, params.response.headers.get("Retry-After"))

    async def error(_s: Any, _c: SimpleNamespace, params: Any) -> None:
        on_failure(_why(params.exception))

    trace.on_request_end.append(end)
    trace.on_request_exception.append(error)
    return trace


def _stop_on_signals(loop: asyncio.AbstractEventLoop, done: asyncio.Future[int]) -> None:
    """SIGINT and SIGTERM end ``tail`` with status 0, even when the shell started it with
    SIGINT ignored (``&``, ``nohup``, some CI runners): the handlers are our own."""

    def stop() -> None:
        if not done.done():
            done.set_result(0)

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop)


async def _tail(args: argparse.Namespace, out: BinaryIO, err: TextIO) -> int:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()
    _stop_on_signals(loop, done)
    status = TailStatus(args.url)
    quiet = bool(getattr(args, "quiet", False))

    def say(text: str | None) -> None:
        if text and not quiet:
            print(f"rxstreams tail: {text}", file=err, flush=True)

    def on_answer(code: int, _retry_after: str | None = None) -> None:
        if code < 300:
            say(status.connected())
        else:
            status.failed(f"HTTP {code}")

    def on_gap(notice: GapNotice) -> None:
        _fail(str(notice), err)

    def on_next(event: Event) -> None:
        status.delivered(str(event.sequence) if event.sequence is not None else None)
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

    backoff = _ReportingBackoff(report=lambda delay: say(status.retrying(delay)))
    session = aiohttp.ClientSession(trace_configs=[_tracing(on_answer, status.failed)])
    try:
        source = make_source(args, on_gap, backoff=backoff, session=session)
        say(status.connecting())
        subscription = source.subscribe(on_next, on_error, on_completed)
        try:
            return await done
        finally:
            subscription.dispose()
            await asyncio.sleep(0)  # let the cancelled task close its connection
    finally:
        await session.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ServerError):
        body = orjson.dumps({"error": exc.body}).decode() if exc.body else ""
        return f"server error: {exc}" + (f"\n{body}" if body else "")
    if isinstance(exc, ConnectionLost | RemoteProtocolError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def tail(args: argparse.Namespace) -> int:
    """Print each event of a live stream as one JSON line on stdout until SIGINT (Ctrl-C) or
    SIGTERM, then exit 0.

    Reconnects and resumes by itself. On stderr: "connecting to …", "<why>; retrying in
    N s", "connected" / "resumed at <position>" (``--quiet`` drops these), gap notices
    and errors.
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


def _seconds(value: str | None) -> float | None:
    """``Retry-After`` in seconds (``None`` for an HTTP date or nothing).

    >>> _seconds("1.5"), _seconds(None), _seconds("Wed, 21 Oct 2015 07:28:00 GMT")
    (1.5, None, None)
    """
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


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

        def on_answer(code: int, retry_after: str | None = None) -> None:
            if code == 429:
                bar.throttled(_seconds(retry_after))

        session = aiohttp.ClientSession(trace_configs=[_tracing(on_answer, lambda _e: None)])
        try:
            result = await publish_ndjson(
                base, args.subject, stream, type=type_, token=token, on_progress=bar.update,
                max_bytes=getattr(args, "chunk_bytes", None) or 256 * 1024,
                max_lines=getattr(args, "chunk_lines", None) or 1000, session=session,
            )  # fmt: skip
        finally:
            await session.close()
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
    except PublishRefused as exc:
        where = f" (after {exc.accepted} accepted, last {exc.last})" if exc.accepted else ""
        _fail(f"{_describe(exc)}{where}")
        return 1
    except (ServerError, RemoteProtocolError, OSError) as exc:
        _fail(_describe(exc))
        return 1
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130
