"""The live chat and event dashboard that ``rxstreams demo`` serves.

:mod:`adapters.demo.pipeline` is the part worth reading: the chat's rules written with
``operators``. :mod:`adapters.demo.app` mounts it, with the page, on the rxstreams server.
"""

from .app import create_demo_app, run
from .pipeline import Rules, build_pipeline

__all__ = ["Rules", "build_pipeline", "create_demo_app", "run"]
