"""``python -m adapters.demo [--host H] [--port P] [--broker URL] [--bots N]``: the same
as ``rxstreams demo`` (see ``--help``)."""

from __future__ import annotations

import sys

from adapters.cli import main as cli_main


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and serve the demo (``rxstreams demo``'s options).

    >>> main(["--port", "8080"])  # doctest: +SKIP
    """
    return cli_main(["demo", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
