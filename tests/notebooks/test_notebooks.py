"""The notebooks in notebooks/ run top to bottom, headless, and are committed clean.

Each notebook asserts what it computed in plain ``assert`` cells, so executing it is the
test. The kernel is this interpreter (a kernelspec written to a temporary directory), so
a fresh clone needs only ``pip install -e .[dev]``. Committed notebooks carry no outputs
and no execution counts (clean diffs); run them in Jupyter to see the outputs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NAMES = [
    "01_compose.ipynb",
    "02_batching_windows_routing.ipynb",
    "03_serve_live_endpoint.ipynb",
    "04_scale_out.ipynb",
]
KERNEL = "rxstreams-test"


@pytest.fixture(scope="module")
def kernel_dirs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A kernelspec that starts ipykernel with the interpreter running the tests."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / KERNEL
    spec.mkdir()
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "rxstreams tests", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    return [str(root)]


def read(name: str) -> Any:
    return nbformat.read(NOTEBOOKS / name, as_version=4)  # type: ignore[no-untyped-call]


def execute(name: str, kernel_dirs: list[str]) -> Any:
    nb = read(name)
    km = KernelManager(
        kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=kernel_dirs)
    )
    client = NotebookClient(nb, km=km, timeout=60, resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    return nb


def outputs(nb: Any, kind: str) -> list[str]:
    """Every output of MIME type ``kind`` (or stream name), in order."""
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("name") == kind:
                found.append(out["text"])
            elif kind in out.get("data", {}):
                found.append(out["data"][kind])
    return found


def test_the_notebooks_are_the_expected_ones() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_committed_clean_and_with_assertions(name: str) -> None:
    nb = read(name)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    dirty = [c.id for c in code if c.outputs or c.execution_count is not None]
    assert not dirty, f"{name}: clear the outputs before committing (cells {dirty})"
    assert sum("assert " in c.source for c in code) >= 3, f"{name}: too few assertions"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


def test_01_compose(kernel_dirs: list[str]) -> None:
    nb = execute("01_compose.ipynb", kernel_dirs)
    assert outputs(nb, "image/svg+xml")  # the marble diagram and the graph
    assert any("rxstreams-live" in h for h in outputs(nb, "text/html"))


def test_02_batching_windows_routing(kernel_dirs: list[str]) -> None:
    nb = execute("02_batching_windows_routing.ipynb", kernel_dirs)
    assert len(outputs(nb, "image/svg+xml")) >= 10
    assert len(outputs(nb, "image/png")) == 2  # the two window plots


def test_03_serve_live_endpoint(kernel_dirs: list[str]) -> None:
    nb = execute("03_serve_live_endpoint.ipynb", kernel_dirs)
    assert any("serving on http://127.0.0.1:" in s for s in outputs(nb, "stdout"))


@pytest.mark.broker
def test_04_scale_out(kernel_dirs: list[str]) -> None:
    # with CI set the notebook itself fails unless both NATS and Redis answer
    nb = execute("04_scale_out.ipynb", kernel_dirs)
    text = "".join(outputs(nb, "stdout"))
    assert "server B saw" in text or "No broker answers" in text


def test_04_without_brokers_says_what_to_start(
    kernel_dirs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("RXSTREAMS_NATS_URL", "nats://127.0.0.1:9")  # discard port: closed
    monkeypatch.setenv("RXSTREAMS_REDIS_URL", "redis://127.0.0.1:9/0")
    nb = execute("04_scale_out.ipynb", kernel_dirs)
    text = "".join(outputs(nb, "stdout"))
    assert "No broker answers" in text
    assert "nats-server -js -a 127.0.0.1 -p 4222" in text and "redis-server --bind" in text
    assert "server B saw" not in text


def test_live_view_in_a_real_kernel_updates_in_place_and_shows_once(
    kernel_dirs: list[str], tmp_path: Path
) -> None:
    nb = nbformat.v4.new_notebook()  # type: ignore[no-untyped-call]
    cells = [
        "from reactivex import Subject\nfrom adapters.notebook import live, views\nsrc = Subject()",
        'live(src, "v", every=0.01)',  # last expression: must not show a second, static copy
        "for i in range(3):\n    src.on_next(i)\nawait views()['v'].until(3)",
        "views()['v'].stop()",
        "view = live(src, 'w')\nview.stop()",
        "view",  # displayed again in a later cell: a snapshot
    ]
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]  # type: ignore[no-untyped-call]
    path = tmp_path / "live.ipynb"
    nbformat.write(nb, path)  # type: ignore[no-untyped-call]
    km = KernelManager(
        kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=kernel_dirs)
    )
    NotebookClient(nb, km=km, timeout=60).execute()
    shown = nb.cells[1].outputs
    views = [o for o in shown if "text/html" in o.get("data", {})]
    assert len(views) == 1 and views[0].output_type == "display_data"
    html = views[0].data["text/html"]  # replaced in place by update_display_data
    assert "3 events" in html and "stopped" in html
    # with ipywidgets (the jupyter extra), a Stop button follows the view
    buttons = [o for o in shown if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(shown) == 1 + len(buttons) and len(buttons) <= 1
    assert [o.output_type for o in nb.cells[5].outputs] == ["display_data"]
    assert "0 events" in nb.cells[5].outputs[0].data["text/html"]
