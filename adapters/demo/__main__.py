"""``python -m adapters.demo --host 127.0.0.1 --port 8080 [--broker URL]``."""

from __future__ import annotations

import argparse

from .app import run


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve the demo.

    >>> main(["--port", "8080"])  # doctest: +SKIP
    """
    parser = argparse.ArgumentParser(prog="python -m adapters.demo", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--broker", default=None, help="nats://... or redis://... (default: embedded)"
    )
    args = parser.parse_args(argv)
    run(args.host, args.port, args.broker)


if __name__ == "__main__":
    main()
