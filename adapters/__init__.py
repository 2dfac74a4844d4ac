"""Adapters: where streams meet the outside world.

``__distribution__`` marks this package as rxstreams' own. PyPI's ``adapters`` distribution
(AdapterHub) installs a top-level ``adapters`` package too, and whichever is installed last
overwrites the other's ``__init__.py``; ``adapters.cli`` checks the mark and, when it is
missing, stops with an error naming the distribution that replaced it (``rxstreams doctor``
lists every such distribution).
"""

__distribution__ = "rxstreams"
