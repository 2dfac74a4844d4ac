"""Every ```python block in the README runs as written.

Blocks that talk to ``127.0.0.1:8080`` run in a subprocess against a real server started
here (``tests/readme_app.py``, synthetic chat traffic) on a free port. Blocks marked
``# no-run`` (they block forever, like ``web.run_app``, or need a notebook's top-level
``await``) are compiled but not run.
"""

from __future__ import annotations

import ast
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    port = _free_port()
    cmd = [sys.executable, "-m", "adapters.cli", "serve", "tests.readme_app:make"]
    proc = subprocess.Popen([*cmd, "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT)
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        else:
            pytest.fail("README example server did not start")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_block_runs(code: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if code.lstrip().startswith(">>>"):
        import doctest

        parser = doctest.DocTestParser()
        test = parser.get_doctest(code, {}, "README", str(README), 0)
        runner = doctest.DocTestRunner()
        runner.run(test)
        assert runner.failures == 0
        return
    compile(code, str(README), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    if "# no-run" in code:
        return
    if "127.0.0.1:8080" not in code:
        exec(compile(code, str(README), "exec"), {"__name__": "readme"})
        return
    port = request.getfixturevalue("server")
    (tmp_path / "readings.ndjson").write_bytes(b'{"c": 20.1}\n{"c": 20.2}\n')
    script = code.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()
