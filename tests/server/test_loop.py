"""The loop choice for ``rxstreams serve``/``demo``: uvloop when installed, else asyncio."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys

import pytest

from adapters.server.loop import loop_factory, loop_name, run

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


async def running_loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def test_asyncio_when_asked() -> None:
    assert run(running_loop_module(), "asyncio") == "asyncio"
    assert loop_name(loop_factory("asyncio")) == "asyncio"


@pytest.mark.skipif(not HAVE_UVLOOP, reason="uvloop not installed")
def test_uvloop_by_default_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RXSTREAMS_LOOP", raising=False)
    assert loop_name(loop_factory()) == "uvloop"
    assert run(running_loop_module()) == "uvloop"


def test_environment_chooses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RXSTREAMS_LOOP", "asyncio")
    assert loop_factory() is None
    monkeypatch.setenv("RXSTREAMS_LOOP", "tokio")
    with pytest.raises(ValueError):
        loop_factory()


def test_the_demo_runs_on_the_chosen_loop() -> None:
    """``rxstreams demo`` starts through the same loop choice as ``serve``: a loop name
    it does not know stops it before it serves (asyncio.run would serve regardless)."""
    code = "from adapters.demo.app import run; run('127.0.0.1', 0, tokens=False)"
    env = {**os.environ, "RXSTREAMS_LOOP": "tokio"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "RXSTREAMS_LOOP must be 'uvloop' or 'asyncio'" in done.stderr
