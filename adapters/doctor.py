"""``rxstreams doctor``: other installed distributions that provide our top-level names.

rxstreams installs three top-level import packages, ``streams``, ``operators`` and
``adapters`` (a product decision). PyPI's ``adapters`` distribution (AdapterHub) installs a
top-level ``adapters`` too: installed together, the one installed last overwrites the
other's files and one of them breaks (``rxstreams --help`` fails when AdapterHub's
``adapters/__init__.py`` replaced ours). pip does not warn, so this module finds such
distributions from their metadata (``importlib.metadata.packages_distributions()``, which
reads each distribution's ``top_level.txt`` or ``RECORD``), and names them.

Reading every distribution's metadata takes a noticeable fraction of a second, so it runs
only for ``rxstreams doctor`` and when ``adapters`` already turned out not to be ours
(:func:`not_ours`), never on an ordinary import.

>>> provided = {"adapters": ["rxstreams", "not-installed-here"], "numpy": ["numpy"]}
>>> [(c.package, c.distribution, c.version) for c in conflicts(provided)]
[('adapters', 'not-installed-here', None)]
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata

__all__ = ["OURS", "TOP_LEVEL", "Conflict", "conflicts", "not_ours", "report"]

OURS = "rxstreams"
TOP_LEVEL = ("streams", "operators", "adapters")
ADVICE = (
    "installed together, one overwrites the other's files; keep them in separate virtual "
    "environments (see the installation docs: docs/getting-started.md#installing)"
)


def _normalized(name: str) -> str:
    """A distribution name as PEP 503 compares them (``RxStreams`` and ``rx_streams`` alike)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Conflict:
    """Another distribution that installs one of rxstreams' top-level package names."""

    package: str
    distribution: str
    version: str | None

    def __str__(self) -> str:
        version = self.version or "(version unknown)"
        return (
            f"distribution {self.distribution!r} {version} also installs the top-level "
            f"package {self.package!r}"
        )


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def conflicts(provided: Mapping[str, Sequence[str]] | None = None) -> list[Conflict]:
    """Every distribution other than rxstreams providing ``streams``, ``operators`` or ``adapters``.

    ``provided`` maps top-level names to distributions, as ``packages_distributions()``
    returns (which is read when it is not given).
    """
    mapping = metadata.packages_distributions() if provided is None else provided
    found = []
    for package in TOP_LEVEL:
        others = {d for d in mapping.get(package, ()) if _normalized(d) != OURS}
        for distribution in sorted(others):
            found.append(Conflict(package, distribution, _version(distribution)))
    return found


def not_ours(module: object) -> str:
    """Why the imported ``adapters`` package is not rxstreams' own, naming who replaced it."""
    where = getattr(module, "__file__", None) or "an unknown location"
    culprits = [c for c in conflicts() if c.package == "adapters"]
    who = "; ".join(str(c) for c in culprits) or "no installed distribution claims it"
    return (
        f"the top-level package 'adapters' imported from {where} is not rxstreams' own ({who}); "
        f"{ADVICE}"
    )


def report(found: Sequence[Conflict]) -> tuple[list[str], int]:
    """The lines ``rxstreams doctor`` prints for ``found``, and its exit status."""
    if not found:
        names = ", ".join(TOP_LEVEL)
        version = _version(OURS) or "(not installed as a distribution)"
        return [f"rxstreams {version}: no other installed distribution provides {names}"], 0
    return [f"{c}; {ADVICE}" for c in found], 1
