"""Live views: drawn through a recording display handle, on the test's running loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from reactivex import Subject

from adapters.notebook import live, stop_all, views, watch
from adapters.notebook.live import Html
from streams import Event


class RecordingHandle:
    """Stands where ``IPython.display.DisplayHandle`` does: keeps what it was given."""

    def __init__(self) -> None:
        self.updates: list[Any] = []
        self.changed = asyncio.Event()

    def update(self, obj: Any) -> None:
        self.updates.append(obj._repr_html_() if hasattr(obj, "_repr_html_") else obj)
        self.changed.set()

    async def next_update(self) -> str:
        self.changed.clear()
        await asyncio.wait_for(self.changed.wait(), 10)
        return str(self.updates[-1])


@pytest.fixture(autouse=True)
def no_views_left() -> Any:
    yield
    stop_all()
    assert views() == {}


async def test_keeps_the_latest_rows_and_redraws_in_place() -> None:
    src: Subject[int] = Subject()
    handle = RecordingHandle()
    view = live(src, "numbers", rows=3, every=0.01, handle=handle)
    for i in range(10):
        src.on_next(i)
    html = await handle.next_update()
    assert view.rows == [7, 8, 9] and view.count == 10
    assert "10 events" in html and html.index(">9<") < html.index(">7<")  # newest first
    assert ">6<" not in html


async def test_one_redraw_per_tick_however_many_events() -> None:
    src: Subject[int] = Subject()
    handle = RecordingHandle()
    view = live(src, "burst", every=0.01, handle=handle)
    for i in range(5000):
        src.on_next(i)
    await handle.next_update()
    assert len(handle.updates) == 1 and view.redraws == 1
    view.stop()
    assert len(handle.updates) == 2 and "stopped" in handle.updates[-1]


async def test_stop_unsubscribes_and_draws_the_final_state() -> None:
    src: Subject[int] = Subject()
    handle = RecordingHandle()
    view = live(src, "s", handle=handle)
    src.on_next(1)
    view.stop()
    view.stop()  # idempotent
    assert view.status == "stopped" and not src.observers
    src.on_next(2)
    assert view.count == 1 and len(handle.updates) == 1 and "1 events" in handle.updates[0]


async def test_same_name_replaces_the_previous_view() -> None:
    a: Subject[int] = Subject()
    first = live(a, "cell", handle=RecordingHandle())
    second = live(a, "cell", handle=RecordingHandle())
    assert first.status == "stopped" and second.status == "running"
    assert views() == {"cell": second} and len(a.observers) == 1


async def test_completion_and_error_end_the_view() -> None:
    ok: Subject[int] = Subject()
    bad: Subject[int] = Subject()
    done = live(ok, "ok", handle=RecordingHandle())
    failed = live(bad, "bad", handle=RecordingHandle())
    ok.on_completed()
    bad.on_error(ValueError("nope"))
    assert done.status == "completed" and failed.status == "error: ValueError: nope"
    assert views() == {}


async def test_until_waits_for_events_from_another_thread() -> None:
    src: Subject[int] = Subject()
    view = live(src, "t", handle=RecordingHandle(), every=10)

    def produce() -> None:
        for i in range(100):
            src.on_next(i)

    worker = threading.Thread(target=produce)
    worker.start()
    await view.until(100)
    worker.join()
    assert view.count == 100


async def test_rate_over_the_redraw_samples() -> None:
    now = [0.0]
    src: Subject[int] = Subject()
    view = live(src, "r", handle=RecordingHandle(), every=1.0)
    view._clock = lambda: now[0]
    view._samples.clear()
    view._samples.append((0.0, 0))
    for i in range(50):
        src.on_next(i)
    now[0] = 2.0
    view._tick()
    assert view.rate == 25.0


async def test_event_columns_and_escaping() -> None:
    handle = RecordingHandle()
    src: Subject[Any] = Subject()
    view = live(src, "ev", handle=handle)
    src.on_next(Event.create({"text": "<b>hi</b>"}, subject="chat.x", type="chat.message"))
    view.redraw(force=True)
    html = handle.updates[-1]
    assert ">subject</th>" in html and "chat.x" in html
    assert "&lt;b&gt;hi&lt;/b&gt;" in html and "<b>hi</b>" not in html


async def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="rows"):
        live(Subject(), "x", rows=0, handle=RecordingHandle())
    with pytest.raises(ValueError, match="every"):
        live(Subject(), "x", every=0, handle=RecordingHandle())


def test_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError, match="running asyncio loop"):
        live(Subject(), "x", handle=RecordingHandle())


async def test_watch_redraws_an_object_until_stopped() -> None:
    handle = RecordingHandle()
    thing = Html("<i>x</i>", "x")
    w = watch(thing, "w", every=0.01, handle=handle)
    await handle.next_update()
    w.stop()
    n = len(handle.updates)
    assert n >= 2 and w.status == "stopped" and views() == {}
    assert handle.updates[-1] == "<i>x</i>"


async def test_rate_chart_left_aligned_cells_and_short_positions() -> None:
    from streams import MemoryBroker

    broker = MemoryBroker()
    handle = RecordingHandle()
    now = [0.0]
    view = live(broker.subscribe(">"), "chart", handle=handle, every=1.0)
    view._clock = lambda: now[0]
    view._samples.clear()
    view._samples.append((0.0, 0))
    for second in range(1, 4):
        for i in range(second * 10):  # 10, 20, 30 events per second
            broker.publish("a.b", {"i": i})
        now[0] = float(second)
        view._tick()
    assert list(view.rates) == [10.0, 15.0, 20.0]  # over the sampled window
    html = handle.updates[-1]
    assert html.count('<svg class="rxstreams-rate"') == 1 and "<polyline" in html
    assert 'style="text-align:left' in html and "<td>" not in html  # every cell left-aligned
    last = broker.history(">")[-1]
    assert last.sequence is not None
    offset = last.sequence.rpartition("-")[2]
    assert f'title="{last.sequence}">{offset}</td>' in html  # short, full on hover
    assert f">{(last.time or '')[11:23]}</td>" in html  # HH:MM:SS.mmm
    assert "stop: view.stop() or re-run the cell" in html
    view.stop()
    assert "re-run the cell" not in handle.updates[-1]


async def test_stop_button_stops_the_view(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ipywidgets")  # the jupyter extra
    import IPython.display

    shown: list[Any] = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, **kw: shown.append(obj) or None)
    src: Subject[int] = Subject()
    from adapters.notebook.live import LiveView, _stop_button

    view = live(src, "btn", handle=RecordingHandle())
    button = _stop_button(view)
    assert isinstance(view, LiveView) and shown == [button]
    view.button = button
    assert button.description == "Stop" and not button.disabled
    button.click()  # what a click in the notebook does
    assert view.status == "stopped" and button.disabled and button.description == "stopped"
    src.on_next(1)
    assert view.count == 0
