"""``rxstreams doctor`` and the import-time check find distributions that clash with our names.

PyPI's ``adapters`` (AdapterHub) installs a top-level ``adapters`` package, as rxstreams does.
These tests install stand-ins for real: a ``*.dist-info`` directory (METADATA, RECORD,
top_level.txt) on ``sys.path`` of a fresh interpreter, which is all
``importlib.metadata.packages_distributions()`` reads, and, for the import-time check, a copy
of our ``adapters`` package whose ``__init__.py`` another distribution overwrote.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fake_distribution(
    site: Path, name: str, version: str, files: list[str], top_level: bool
) -> None:
    """Install the metadata of distribution ``name`` owning ``files`` into ``site``."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    record = [*files, f"{info.name}/METADATA", f"{info.name}/RECORD"]
    (info / "RECORD").write_text("".join(f"{path},,\n" for path in record))
    if top_level:
        (info / "top_level.txt").write_text("".join(sorted({f.split("/")[0] for f in files})))


def run(args: list[str], site: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_doctor_names_each_distribution_that_installs_our_names(tmp_path: Path) -> None:
    site = tmp_path / "site"
    hub = ["adapters/__init__.py", "adapters/heads/base.py"]
    fake_distribution(site, "adapters-hub-stand-in", "1.1.0", hub, top_level=True)
    fake_distribution(site, "other-streams", "0.3", ["streams/__init__.py"], top_level=False)
    fake_distribution(site, "harmless", "2.0", ["harmless/__init__.py"], top_level=True)

    done = run(["-m", "adapters.cli", "doctor"], site, cwd=ROOT)

    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    assert (
        "distribution 'other-streams' 0.3 also installs the top-level package 'streams'"
        in (lines[0])
    )
    assert (
        "distribution 'adapters-hub-stand-in' 1.1.0 also installs the top-level package "
        "'adapters'" in lines[1]
    )
    assert all("separate virtual environments" in line for line in lines)
    assert "harmless" not in done.stdout


def test_doctor_is_quiet_and_succeeds_without_a_clash(tmp_path: Path) -> None:
    site = tmp_path / "site"
    fake_distribution(site, "harmless", "2.0", ["harmless/__init__.py"], top_level=True)

    done = run(["-m", "adapters.cli", "doctor"], site, cwd=ROOT)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "no other installed distribution provides streams, operators, adapters" in done.stdout


def test_the_cli_refuses_an_adapters_package_another_distribution_overwrote(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    shutil.copytree(
        ROOT / "adapters", site / "adapters", ignore=shutil.ignore_patterns("__pycache__")
    )
    (site / "adapters" / "__init__.py").write_text('"""Someone else\'s adapters."""\n')
    fake_distribution(site, "adapters-hub-stand-in", "1.1.0", ["adapters/__init__.py"], True)

    done = run(["-m", "adapters.cli", "--help"], site, cwd=tmp_path)

    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: the top-level package 'adapters' imported from ")
    assert str(site / "adapters" / "__init__.py") in last
    assert "is not rxstreams' own" in last
    assert "distribution 'adapters-hub-stand-in' 1.1.0 also installs" in last


def test_our_own_adapters_package_carries_the_mark() -> None:
    import adapters

    assert adapters.__distribution__ == "rxstreams"
