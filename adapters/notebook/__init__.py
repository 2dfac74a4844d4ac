"""Notebook helpers: live views, marble diagrams, pipeline graphs and window plots.

Everything is importable without Jupyter; IPython and matplotlib are imported only when a
view is displayed or a plot is drawn (install them with the ``notebook`` extra).

- :func:`live` (:class:`LiveView`): latest events and rate of an observable, in place.
- :func:`watch`: redraw any displayable object (e.g. a pipeline graph) in place.
- :func:`marble` (:class:`Marble`): SVG marble diagram of a pipeline on virtual time.
- :func:`pipeline_graph` (:class:`PipelineGraph`): stages of an instrumented pipeline
  with their counters, as SVG.
- :func:`plot_windows`: matplotlib figure of windowed aggregates.

>>> from adapters.notebook import marble
>>> marble(lambda s: s, [(0, "a")]).values()
['a']
"""

from .graph import PipelineGraph, pipeline_graph
from .live import Html, LiveView, Watch, live, stop_all, views, watch
from .marbles import Marble, Mark, label_of, marble, record
from .plots import plot_windows, window_series

__all__ = [
    "Html",
    "LiveView",
    "Marble",
    "Mark",
    "PipelineGraph",
    "Watch",
    "label_of",
    "live",
    "marble",
    "pipeline_graph",
    "plot_windows",
    "record",
    "stop_all",
    "views",
    "watch",
    "window_series",
]
