"""``make notebook`` opens the notebooks in JupyterLab, from the ``jupyter`` extra."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_jupyter_extra_brings_a_front_end() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    jupyter = extras["jupyter"]
    assert "rxstreams[notebook]" in jupyter
    assert any(req.startswith("jupyterlab") for req in jupyter)
    assert any(req.startswith("ipywidgets") for req in jupyter)  # the live view's Stop button


def test_make_notebook_installs_the_extra_when_missing_and_opens_jupyterlab() -> None:
    out = subprocess.run(
        ["make", "--no-print-directory", "-n", "-o", ".venv/.installed", "notebook"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    assert "pip install -q -e '.[jupyter]'" in out
    assert out.rstrip().endswith("jupyter lab notebooks/")
