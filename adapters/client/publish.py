"""Publishing to a server's ``POST /events/{subject}``, and an async :class:`Client`."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

import aiohttp
import orjson
from reactivex import Observable
from yarl import URL

from streams import Event, Position
from streams.errors import deprecated_alias

from .backoff import Backoff
from .ndjson import ndjson_chunks
from .protocol import RemoteProtocolError, ServerError
from .sources import _Session, ndjson_source, sse_source, websocket_source

__all__ = ["Client", "PublishRefused", "PublishResult", "publish", "publish_ndjson"]

_MISSING: Final = object()
# Answers that guarantee nothing was published (all-or-nothing), so sending again is safe.
_SAFE_TO_RETRY: Final = frozenset({429, 503})
_LINE: Final = re.compile(r"^line \d+")


class PublishRefused(ServerError):
    """A chunk of an NDJSON upload was refused; the ``accepted`` values before it were
    published (the last at ``last``). Line numbers in the message are the file's.

    Formerly ``adapters.client.PublishError``, a name that also meant the brokers'
    :class:`streams.PublishError` (a publish the *broker* did not acknowledge); the old name
    still imports, but is deprecated.
    """

    def __init__(self, error: ServerError, accepted: int, last: Position | None) -> None:
        super().__init__(error.status, error.code, error.message, error.body)
        self.accepted = accepted
        self.last = last


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What an NDJSON upload published: ``count`` events from ``first`` to ``last``."""

    count: int
    first: Position | None
    last: Position | None
    requests: int


def events_url(base_url: str | URL, subject_or_pattern: str) -> URL:
    """``{base}/events/{subject}``, the subject encoded as one path segment.

    >>> str(events_url("http://127.0.0.1:8080/", "chat.>"))
    'http://127.0.0.1:8080/events/chat.%3E'
    """
    base = URL(base_url)
    return base.with_path(base.path.rstrip("/") + "/events/") / subject_or_pattern


def _item(value: Any) -> Any:
    return value.to_dict() if isinstance(value, Event) else value


async def _post(
    session: aiohttp.ClientSession,
    url: URL,
    body: bytes,
    content_type: str,
    type: str | None,
    headers: Mapping[str, str],
) -> list[Position]:
    params = {"type": type} if type else None
    hdrs = {**headers, "Content-Type": content_type, "Accept": "application/json"}
    async with session.post(url, data=body, params=params, headers=hdrs) as resp:
        raw = await resp.read()
        if resp.status >= 300:
            err = ServerError.from_http(resp.status, raw)
            err.retry_after = _seconds(resp.headers.get("Retry-After"))
            raise err
    try:
        return [Position.parse(p) for p in orjson.loads(raw)["positions"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise RemoteProtocolError(f"unexpected publish answer {raw[:200]!r}: {exc}") from None


def _partly_stored(exc: ServerError) -> bool:
    """A 503 ``unavailable`` that lists ``committed`` positions stored part of the batch:
    sending it again would duplicate them, so the caller must decide."""
    return bool(exc.body.get("committed"))


def _seconds(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to the backoff policy


async def _post_retrying(
    post: Callable[[], Awaitable[list[Position]]], retry: Backoff
) -> list[Position]:
    """``post()`` (a :func:`_post`), sent again after 429/503 (which publish nothing),
    waiting for ``Retry-After`` or the next backoff delay, until ``retry`` gives up."""
    while True:
        try:
            positions = await post()
        except ServerError as exc:
            if exc.status not in _SAFE_TO_RETRY or _partly_stored(exc):
                raise
            delay = retry.next_delay()
            if delay is None:
                raise
            await asyncio.sleep(exc.retry_after if exc.retry_after is not None else delay)
            continue
        retry.reset()
        return positions


def _default_retry() -> Backoff:
    return Backoff(initial=0.2, maximum=5.0, max_attempts=10)


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def publish(
    base_url: str | URL,
    subject: str,
    data: Any = _MISSING,
    *,
    events: Iterable[Any] | None = None,
    type: str | None = None,
    token: str | None = None,
    session: aiohttp.ClientSession | None = None,
    retry: Backoff | None = None,
) -> list[Position]:
    """Publish one value as ``data``, or several with ``events=`` (values, or
    :class:`streams.Event` objects sent as CloudEvents), all or nothing; returns positions.

    Raises :class:`ServerError` with the server's JSON error (``code``, ``message``).
    A 429 or 503 answer (nothing published) is retried per ``retry`` (default: up to 10
    times, 0.2 s doubling to 5 s, or as ``Retry-After`` says).

    >>> await publish("http://127.0.0.1:8080", "chat.lobby.msg", {"text": "hi"})  # doctest: +SKIP
    [Position(epoch='5f2a', offset=1)]
    """
    if (data is _MISSING) == (events is None):
        raise TypeError("publish() takes either data or events=, not both or neither")
    items = [_item(data)] if events is None else [_item(e) for e in events]
    if not items:
        raise ValueError("events= is empty: nothing to publish")
    try:
        body = orjson.dumps(items)
    except TypeError as exc:
        raise ValueError(f"not JSON-serializable: {exc}") from None
    async with _Session(session) as http:
        url = events_url(base_url, subject)
        post = partial(_post, http, url, body, "application/json", type, _headers(token))
        return await _post_retrying(post, retry or _default_retry())


async def publish_ndjson(
    base_url: str | URL,
    subject: str,
    lines: Iterable[bytes],
    *,
    type: str | None = None,
    token: str | None = None,
    session: aiohttp.ClientSession | None = None,
    max_bytes: int = 256 * 1024,
    max_lines: int = 1000,
    on_progress: Callable[[int, int], None] | None = None,
    retry: Backoff | None = None,
) -> PublishResult:
    """Stream NDJSON ``lines`` (a binary file works) in requests of at most ``max_bytes`` /
    ``max_lines``, one after another; ``on_progress(values_sent, bytes_sent)`` after each.

    Each request is all-or-nothing; 429 and 503 answers are retried as in :func:`publish`
    (a rate-limited upload slows down to the server's pace). If one is refused,
    :class:`PublishRefused` says how many values went before it and names the offending
    line of the *file*.

    >>> with open("events.ndjson", "rb") as f:  # doctest: +SKIP
    ...     r = await publish_ndjson("http://127.0.0.1:8080", "sensors.a", f)
    """
    count = sent_bytes = requests = 0
    first: Position | None = None
    last: Position | None = None
    url = events_url(base_url, subject)
    policy = retry or _default_retry()
    async with _Session(session) as http:
        for first_line, n, body in ndjson_chunks(lines, max_bytes, max_lines):
            try:
                post = partial(
                    _post, http, url, body, "application/x-ndjson", type, _headers(token)
                )
                positions = await _post_retrying(post, policy)
            except ServerError as exc:
                raise PublishRefused(_shift_lines(exc, first_line - 1), count, last) from None
            requests += 1
            count += n
            sent_bytes += len(body)
            if positions:
                first = first or positions[0]
                last = positions[-1]
            if on_progress is not None:
                on_progress(count, sent_bytes)
    return PublishResult(count, first, last, requests)


def _shift_lines(err: ServerError, offset: int) -> ServerError:
    """The error with its NDJSON line numbers counted from the start of the file."""
    line = err.body.get("line")
    if not isinstance(line, int) or offset == 0:
        return err
    body = {**err.body, "line": line + offset}
    message = _LINE.sub(f"line {line + offset}", err.message)
    if isinstance(body.get("message"), str):
        body["message"] = message
    return ServerError(err.status, err.code, message, body)


class Client:
    """One connection pool to a server, for publishing and subscribing.

    >>> async with Client("http://127.0.0.1:8080") as c:  # doctest: +SKIP
    ...     await c.publish("chat.lobby.msg", {"text": "hi"})
    ...     d = c.events("chat.>").subscribe(print)
    """

    def __init__(self, base_url: str | URL, token: str | None = None) -> None:
        self.base_url = URL(base_url)
        self.token = token
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the pool (subscriptions made through this client end)."""
        if self._session is not None:
            await self._session.close()

    async def publish(
        self,
        subject: str,
        data: Any = _MISSING,
        *,
        events: Iterable[Any] | None = None,
        type: str | None = None,
    ) -> list[Position]:
        """See :func:`publish`."""
        return await publish(
            self.base_url, subject, data, events=events, type=type, token=self.token,
            session=self.session,
        )  # fmt: skip

    async def publish_ndjson(
        self, subject: str, lines: Iterable[bytes], **kwargs: Any
    ) -> PublishResult:
        """See :func:`publish_ndjson`."""
        return await publish_ndjson(
            self.base_url, subject, lines, token=self.token, session=self.session, **kwargs
        )

    def events(
        self,
        pattern: str,
        since: Position | str | None = None,
        format: str = "sse",
        **kwargs: Any,
    ) -> Observable[Event]:
        """Events matching ``pattern`` over SSE (``format="sse"``) or NDJSON."""
        make = {"sse": sse_source, "ndjson": ndjson_source}.get(format)
        if make is None:
            raise ValueError(f"format must be 'sse' or 'ndjson', not {format!r}")
        url = events_url(self.base_url, pattern)
        return make(url, since, token=self.token, session=self.session, **kwargs)

    def websocket(
        self,
        pattern: str = ">",
        since: Position | str | None = None,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Observable[Event]:
        """Events matching ``pattern`` over the server's ``/ws`` endpoint."""
        scheme = "wss" if self.base_url.scheme == "https" else "ws"
        url = self.base_url.with_scheme(scheme).with_path(self.base_url.path.rstrip("/") + "/ws")
        return websocket_source(
            url, pattern, since, filter, token=self.token, session=self.session, **kwargs
        )


def __getattr__(name: str) -> Any:
    """``PublishError``, the deprecated name of :class:`PublishRefused`."""
    if name == "PublishError":
        return deprecated_alias(__name__, name, PublishRefused)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
