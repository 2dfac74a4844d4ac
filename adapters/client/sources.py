"""Observables over a remote rxstreams server: SSE, NDJSON and WebSocket.

Each subscription runs one asyncio task on the running loop (a server's, a script's
``asyncio.run``, a Jupyter kernel's) holding one ``aiohttp.ClientSession``. The task
reconnects with :class:`~adapters.client.backoff.Backoff` and resumes from the last
position it delivered (``Last-Event-ID`` / ``since``); a
:class:`~adapters.client.protocol.ResumeTracker` drops anything already delivered, so
no event is repeated across reconnects. Disposing the subscription cancels the task,
which closes the connection and the session.

Tokens: ``token=`` takes a string or a provider called again before every reconnect
(see :func:`sse_source`); a stream the server ends at the token's expiry reconnects.

Gaps: when the server no longer holds the events after the resume position it says so;
the source passes a :class:`~adapters.client.protocol.GapNotice` to ``on_gap`` (default:
a warning on the ``adapters.client`` logger) and keeps going from the earliest event
still available. The stream itself carries only :class:`streams.Event` objects.

The stream ends with an error for what retrying cannot fix: a 4xx answer or WebSocket
``error`` (:class:`~adapters.client.protocol.ServerError`), a protocol violation
(:class:`~adapters.client.protocol.RemoteProtocolError`), or ``max_attempts`` consecutive
failed connections (:class:`ConnectionLost`). It never completes by itself.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, Final

import aiohttp
from reactivex import Observable, abc
from reactivex.disposable import Disposable
from yarl import URL

from streams import Event, Position
from streams.errors import ClientError

from .backoff import Backoff
from .ndjson import LineSplitter
from .protocol import (
    Control,
    GapNotice,
    ResumeTracker,
    ServerError,
    decode_ndjson_line,
    decode_sse_message,
    decode_ws_message,
    subscribe_message,
)
from .sse import SseParser

__all__ = [
    "ConnectionLost",
    "OnGap",
    "Token",
    "TokenProvider",
    "first_events",
    "ndjson_source",
    "sse_source",
    "websocket_source",
]

log = logging.getLogger("adapters.client")

OnGap = Callable[[GapNotice], Any]
#: Called before every connection (the first and each reconnect) for the token to send.
TokenProvider = Callable[[], "str | Awaitable[str | None] | None"]
Token = str | TokenProvider | None
DEFAULT_MAX_SIZE: Final = 16 * 1024 * 1024
_HANDSHAKE_CODES: Final = {401: "unauthorized", 403: "forbidden", 503: "overloaded"}


class ConnectionLost(ClientError, ConnectionError):
    """Reconnecting failed ``max_attempts`` times in a row; ``__cause__`` is the last error."""


def _warn_gap(notice: GapNotice) -> None:
    log.warning("%s", notice)


class _Session:
    """The session a run uses: the caller's (left open) or its own (closed at the end)."""

    def __init__(self, session: aiohttp.ClientSession | None) -> None:
        self._given = session
        self.session: aiohttp.ClientSession | None = session

    async def __aenter__(self) -> aiohttp.ClientSession:
        if self.session is None:
            self.session = aiohttp.ClientSession()
        return self.session

    async def __aexit__(self, *exc: object) -> None:
        if self._given is None and self.session is not None:
            await self.session.close()


def _observable(run: Callable[[abc.ObserverBase[Event]], Awaitable[None]]) -> Observable[Event]:
    """An observable whose every subscription runs ``run(observer)`` as a task."""

    def on_subscribe(
        observer: abc.ObserverBase[Event], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "client sources run on an asyncio loop: subscribe from async code "
                "(inside asyncio.run(), a server, or a Jupyter cell)"
            ) from None

        async def main() -> None:
            try:
                await run(observer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                observer.on_error(exc)

        task = loop.create_task(main())

        def dispose() -> None:
            task.cancel()  # the task's ``async with`` closes the connection and session

        return Disposable(dispose)

    return Observable(on_subscribe)


async def _auth_headers(token: Token, headers: Mapping[str, str] | None) -> dict[str, str]:
    """The request headers with ``Authorization: Bearer``; a token provider is asked now,
    so every reconnect presents a token that is fresh then."""
    out = dict(headers or {})
    value = token() if callable(token) else token
    if inspect.isawaitable(value):
        value = await value
    if value:
        out["Authorization"] = f"Bearer {value}"
    return out


async def _retrying(policy: Backoff, attempt: Callable[[], Awaitable[None]]) -> None:
    """Run ``attempt`` forever: retryable failures and clean ends wait and go again."""
    while True:
        error: BaseException | None = None
        try:
            await attempt()
        except ServerError as exc:
            if not exc.retryable:
                raise
            error = exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = exc
        delay = policy.next_delay()
        if delay is None:
            raise ConnectionLost(
                f"gave up after {policy.attempts} failed attempts: {error or 'connection closed'}"
            ) from error
        if error is not None:
            log.debug("reconnecting in %.2fs after %r", delay, error)
        await asyncio.sleep(delay)


class _Subscription:
    """What one subscription keeps across reconnects: the resume position and the backoff."""

    def __init__(
        self,
        observer: abc.ObserverBase[Event],
        since: Position | str | None,
        backoff: Backoff | None,
        on_gap: OnGap,
    ) -> None:
        self.observer = observer
        self.tracker = ResumeTracker(since)
        self.policy = (backoff or Backoff()).fresh()
        self._on_gap = on_gap

    def deliver(self, event: Event, fallback_id: str | None = None) -> None:
        """Pass ``event`` on unless it was delivered before (a replay after a reconnect)."""
        if self.tracker.accept(event, fallback_id):
            self.observer.on_next(event)

    def gap(self, notice: GapNotice) -> None:
        """Resume from the earliest event still available, and tell ``on_gap``."""
        self.tracker.gap(notice)
        self._on_gap(notice)


def _resuming(
    attempt: Callable[[aiohttp.ClientSession, _Subscription], Awaitable[None]],
    since: Position | str | None,
    backoff: Backoff | None,
    on_gap: OnGap | None,
    session: aiohttp.ClientSession | None,
) -> Observable[Event]:
    """An observable whose every subscription calls ``attempt`` (one connection) again
    and again, per :func:`_retrying`, with one :class:`_Subscription` throughout."""
    gap_cb = on_gap or _warn_gap

    async def run(observer: abc.ObserverBase[Event]) -> None:
        sub = _Subscription(observer, since, backoff, gap_cb)
        async with _Session(session) as http:
            await _retrying(sub.policy, lambda: attempt(http, sub))

    return _observable(run)


# Decodes one response body chunk by chunk: (event or gap notice or nothing, SSE id).
_Decoded = Iterator[tuple[Event | GapNotice | ServerError | None, str | None]]
_Decoder = Callable[[bytes], _Decoded]


def _sse_decoder(max_size: int, policy: Backoff) -> _Decoder:
    parser = SseParser(max_size)

    def decode(chunk: bytes) -> _Decoded:
        for msg in parser.feed(chunk):
            yield decode_sse_message(msg), msg.id
        if parser.retry is not None:  # the server's ``retry:`` sets the first delay
            policy.initial = min(parser.retry / 1000, policy.maximum)

    return decode


def _ndjson_decoder(max_size: int, policy: Backoff) -> _Decoder:
    splitter = LineSplitter(max_size)

    def decode(chunk: bytes) -> _Decoded:
        for line in splitter.feed(chunk):
            yield decode_ndjson_line(line), None

    return decode


def _http_source(
    url: str | URL,
    accept: str,
    decoder: Callable[[int, Backoff], _Decoder],
    since: Position | str | None,
    backoff: Backoff | None,
    on_gap: OnGap | None,
    token: Token,
    headers: Mapping[str, str] | None,
    session: aiohttp.ClientSession | None,
    idle_timeout: float | None,
    max_size: int,
) -> Observable[Event]:
    target = URL(url)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=idle_timeout)

    async def attempt(http: aiohttp.ClientSession, sub: _Subscription) -> None:
        hdrs = await _auth_headers(token, headers)
        hdrs.update({"Accept": accept, "Cache-Control": "no-cache"})
        if sub.tracker.position is not None:
            hdrs["Last-Event-ID"] = str(sub.tracker.position)
        async with http.get(target, headers=hdrs, timeout=timeout) as resp:
            if resp.status != 200:
                raise ServerError.from_http(resp.status, await resp.read())
            decode = decoder(max_size, sub.policy)
            first = True
            async for chunk in resp.content.iter_any():
                if first:
                    sub.policy.reset()
                    first = False
                for item, event_id in decode(chunk):
                    if isinstance(item, GapNotice):
                        sub.gap(item)
                    elif isinstance(item, ServerError):
                        raise item  # token_expired: reconnect with a fresh token
                    elif item is not None:
                        sub.deliver(item, event_id)

    return _resuming(attempt, since, backoff, on_gap, session)


def sse_source(
    url: str | URL,
    since: Position | str | None = None,
    *,
    backoff: Backoff | None = None,
    on_gap: OnGap | None = None,
    token: Token = None,
    headers: Mapping[str, str] | None = None,
    session: aiohttp.ClientSession | None = None,
    idle_timeout: float | None = 60.0,
    max_size: int = DEFAULT_MAX_SIZE,
) -> Observable[Event]:
    """Events from ``GET /events/{pattern}`` as Server-Sent Events, reconnecting and
    resuming with ``Last-Event-ID``. ``since`` starts after that position (``None``: live).

    ``idle_timeout`` (seconds without a byte, heartbeats included) counts as a dropped
    connection; keep it above the server's heartbeat interval (15 s by default).

    ``token`` is a JWT, or a token provider: a function (plain or async) called before
    every connection, so the reconnect after the server ended the stream at the token's
    expiry (``token_expired``) presents a fresh token and resumes where it stopped.

    >>> async def main():  # doctest: +SKIP
    ...     src = sse_source("http://127.0.0.1:8080/events/chat.>")
    ...     d = src.subscribe(lambda e: print(e.subject, e.data))
    ...     await asyncio.sleep(10)
    ...     d.dispose()
    """
    return _http_source(
        url, "text/event-stream", _sse_decoder,
        since, backoff, on_gap, token, headers, session, idle_timeout, max_size,
    )  # fmt: skip


def ndjson_source(
    url: str | URL,
    since: Position | str | None = None,
    *,
    backoff: Backoff | None = None,
    on_gap: OnGap | None = None,
    token: Token = None,
    headers: Mapping[str, str] | None = None,
    session: aiohttp.ClientSession | None = None,
    idle_timeout: float | None = 60.0,
    max_size: int = DEFAULT_MAX_SIZE,
) -> Observable[Event]:
    """Events from ``GET /events/{pattern}`` as NDJSON (``Accept: application/x-ndjson``);
    otherwise the same as :func:`sse_source`.

    >>> src = ndjson_source("http://127.0.0.1:8080/events/sensors.*")  # doctest: +SKIP
    >>> d = src.pipe(ops.take(5)).subscribe(print)  # doctest: +SKIP
    """
    return _http_source(
        url, "application/x-ndjson", _ndjson_decoder,
        since, backoff, on_gap, token, headers, session, idle_timeout, max_size,
    )  # fmt: skip


def websocket_source(
    url: str | URL,
    pattern: str = ">",
    since: Position | str | None = None,
    filter: dict[str, Any] | None = None,
    *,
    backoff: Backoff | None = None,
    on_gap: OnGap | None = None,
    token: Token = None,
    headers: Mapping[str, str] | None = None,
    session: aiohttp.ClientSession | None = None,
    heartbeat: float | None = 20.0,
    max_size: int = DEFAULT_MAX_SIZE,
) -> Observable[Event]:
    """Events from ``GET /ws``: one ``subscribe`` to ``pattern`` (with ``filter``, see the
    protocol), resubscribed with ``since`` after every reconnect. ``heartbeat`` pings the
    server and treats a missing pong as a dropped connection.

    >>> src = websocket_source("ws://127.0.0.1:8080/ws", "chat.lobby.>",
    ...                        filter={"type": "chat.message"})  # doctest: +SKIP
    >>> d = src.subscribe(lambda e: print(e.data))  # doctest: +SKIP
    """
    target = URL(url)
    sub_id = "s1"

    async def attempt(http: aiohttp.ClientSession, sub: _Subscription) -> None:
        hdrs = await _auth_headers(token, headers)
        ws = await _ws_connect(http, target, hdrs, heartbeat, max_size)

        async def subscribe() -> None:
            await ws.send_str(
                subscribe_message(sub_id, pattern, sub.tracker.position, filter).decode()
            )

        async with ws:
            await subscribe()
            async for msg in ws:
                for item in _ws_items(ws, msg):
                    if isinstance(item, Event):  # the hot path: most items are events
                        sub.deliver(item)
                    elif _ws_notice(item, sub):
                        await subscribe()
            log.debug("WebSocket closed with code %s", ws.close_code)

    return _resuming(attempt, since, backoff, on_gap, session)


async def _ws_connect(
    http: aiohttp.ClientSession,
    target: URL,
    headers: Mapping[str, str],
    heartbeat: float | None,
    max_size: int,
) -> aiohttp.ClientWebSocketResponse:
    """Open the WebSocket; a refused handshake becomes the :class:`ServerError` its HTTP
    status means (so 401/403/503 are told apart from a dropped connection)."""
    try:
        return await http.ws_connect(
            target, headers=headers, heartbeat=heartbeat, compress=0, max_msg_size=max_size
        )
    except aiohttp.WSServerHandshakeError as exc:
        code = _HANDSHAKE_CODES.get(exc.status, "http_error")
        raise ServerError(exc.status, code, exc.message or "handshake refused") from None


def _ws_items(
    ws: aiohttp.ClientWebSocketResponse, msg: aiohttp.WSMessage
) -> Sequence[Event | GapNotice | ServerError | Control]:
    """What one WebSocket message carries (events, notices, errors); a transport error
    ends the connection, and control frames carry nothing."""
    if msg.type == aiohttp.WSMsgType.ERROR:
        raise aiohttp.ClientConnectionError(f"WebSocket error: {ws.exception()}")
    if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
        return ()
    return decode_ws_message(msg.data)


def _ws_notice(item: object, sub: _Subscription) -> bool:
    """Act on a decoded item that is not an event. True when the server refused the resume
    with a ``gap`` error: the caller subscribes again, from the earliest retained event. Any
    other error from the server ends the connection (raised)."""
    if isinstance(item, GapNotice):
        sub.gap(item)
    elif isinstance(item, ServerError):
        if item.code != "gap":
            raise item
        sub.gap(GapNotice.from_dict(item.body))
        return True
    elif isinstance(item, Control) and item.op == "subscribed":
        sub.policy.reset()
    return False


async def first_events(source: Observable[Event], n: int, timeout: float = 10.0) -> list[Event]:
    """Collect the first ``n`` events of ``source`` (a convenience for scripts and tests).

    >>> evs = await first_events(sse_source(url), 3)  # doctest: +SKIP
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    got: list[Event] = []

    def on_next(e: Event) -> None:
        got.append(e)
        if len(got) >= n and not done.done():
            done.set_result(None)

    def on_error(exc: Exception) -> None:
        if not done.done():
            done.set_exception(exc)

    d = source.subscribe(on_next, on_error)
    try:
        await asyncio.wait_for(done, timeout)
    finally:
        d.dispose()
    return got[:n]
