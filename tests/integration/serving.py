"""``rxstreams serve`` as a subprocess on a free port, for the integration tests."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).parents[2]
GUARD = 15.0  # turns a hang into a failure; never a timed assertion


class CliProcess:
    """One ``python -m adapters.cli <command>`` subprocess that announces its URL on its
    first line of output; :class:`Server` and the demo cluster tests' ``Demo`` are two."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str) -> None:
        self.proc = proc
        self.url = url

    @staticmethod
    async def spawn(
        args: list[str], ready: str, env: dict[str, str] | None = None
    ) -> tuple[asyncio.subprocess.Process, str]:
        """Start ``rxstreams <args>`` and return it with its first line, which must contain
        ``ready`` (otherwise the process is killed and the line reported)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "adapters.cli",
            *args,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        )
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), GUARD)).decode()
        if ready not in line:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"rxstreams {args[0]} did not start: {line!r}")
        return proc, line

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), GUARD)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class Server(CliProcess):
    """One ``rxstreams serve`` subprocess on a free port."""

    @classmethod
    async def start(cls, broker_url: str) -> Server:
        args = ["serve", "tests.integration.apps:idle", "--port", "0", "--broker", broker_url]
        proc, line = await cls.spawn(args, "serving on")
        return cls(proc, line.rsplit(" ", 1)[1].strip())


async def sse_fields(resp: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """Each SSE event of a response as its fields (``id``, ``event``, ``data`` parsed as
    JSON); comments (heartbeats) are skipped, and the stream ending fails."""
    fields: dict[str, Any] = {}
    while True:
        raw = await asyncio.wait_for(resp.content.readline(), GUARD)
        assert raw, "the SSE stream ended"
        line = raw.decode().rstrip("\n")
        if line:
            if not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
            continue
        if "data" in fields:
            fields["data"] = orjson.loads(fields["data"])
            yield fields
        fields = {}
