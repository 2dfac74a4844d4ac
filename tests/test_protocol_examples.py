"""Every code example in docs/PROTOCOL.md "Other producers and consumers" runs as written.

Like ``tests/test_readme.py``, but against the real NATS and Redis servers: each
```python`` and ```sh`` block runs in a subprocess on a fresh stream (its
``STREAM = "rxstreams"`` and ``{rxstreams}`` rewritten to the test's stream), after
rxstreams stored one event there. A block that writes must leave events an rxstreams
subscriber reads without skipping any; a block that reads must print the stored event.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from streams import Event

from .brokers.conftest import Collector, build, dispose, unique_stream
from .brokers.services import require

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "docs" / "PROTOCOL.md"
SECTION = PROTOCOL.read_text().split("## Other producers and consumers", 1)[-1].split("\n## ")[0]
BLOCKS = re.findall(r"```(python|sh)\n(.*?)```", SECTION, flags=re.S)
GUARD = 30.0
CHECK_ID = "docs-check-1"
DOCUMENTED_TYPES = {"com.example.order.paid", "io.rxstreams.external"}


def _kind(code: str) -> str:
    return "nats" if "import nats" in code else "redis"


def _prepare(lang: str, code: str, kind: str, stream: str) -> list[str]:
    """The command running ``code`` on ``stream`` against the test's servers."""
    rewritten = code.replace('STREAM = "rxstreams"', f'STREAM = "{stream}"')
    rewritten = rewritten.replace("{rxstreams}", f"{{{stream}}}")
    assert rewritten != code, "the example must name the stream as STREAM or {rxstreams}"
    url = require(kind)
    if lang == "sh":
        return ["bash", "-c", rewritten.replace("redis-cli ", f"redis-cli -u {url} ")]
    defaults = {"nats": "nats://127.0.0.1:4222", "redis": "redis://127.0.0.1:6379/0"}
    return [sys.executable, "-c", rewritten.replace(defaults[kind], url)]


def test_protocol_has_outside_examples() -> None:
    langs = [lang for lang, _ in BLOCKS]
    assert langs.count("python") >= 4 and langs.count("sh") >= 2


@pytest.mark.parametrize(("lang", "code"), BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
async def test_protocol_example_runs(lang: str, code: str) -> None:
    if lang == "sh" and shutil.which("redis-cli") is None:
        pytest.skip("redis-cli is not installed")
    kind = _kind(code)
    stream = unique_stream()
    broker = build(kind, stream=stream)
    try:
        await broker.connect()
        start = await broker.last_position()
        await broker.apublish("docs.check", Event.create({"check": True}, id=CHECK_ID))

        proc = await asyncio.create_subprocess_exec(
            *_prepare(lang, code, kind, stream),
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), GUARD)
        assert proc.returncode == 0, err.decode()

        end = await broker.apublish("docs.end", None)
        sub = Collector(broker.subscribe(">", since=start))
        await sub.until(lambda c: bool(c.events) and c.events[-1].sequence == str(end))
        written = sub.events[1:-1]
        assert sub.events[0].id == CHECK_ID
        assert broker.skipped.count == 0, "rxstreams skipped something the example wrote"
        if "publish(" in code or "XADD" in code.upper():
            assert written, "the example wrote nothing"
            assert {e.type for e in written} <= DOCUMENTED_TYPES
        else:
            assert not written
            assert CHECK_ID in out.decode(), out.decode()
    finally:
        await dispose(broker)
