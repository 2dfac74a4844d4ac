"""An error in a user's function, raised through a fused chain, shows the generated source
in its traceback: the fused frame's line and the stage it belongs to."""

from __future__ import annotations

import linecache
import traceback
from typing import Any

from operators import batch, select, where
from streams import from_iterable


def parse_price(x: int) -> float:
    return 100 / x  # fails on 0


def is_positive(x: int) -> bool:
    if x == 13:
        raise ValueError("unlucky")
    return x >= 0


def first_error(obs: Any) -> BaseException:
    errors: list[BaseException] = []
    obs.subscribe(on_next=lambda _: None, on_error=errors.append)
    assert len(errors) == 1
    return errors[0]


def test_a_failing_map_shows_the_fused_line_and_names_the_stage() -> None:
    error = first_error(
        from_iterable([1, 2, 0]).pipe(where(is_positive), select(parse_price), batch(count=2))
    )
    text = "".join(traceback.format_exception(error))
    assert 'File "<rxstreams fused ' in text
    assert "y = f1(x)  # map(parse_price)" in text
    assert "return 100 / x  # fails on 0" in text  # the user's own frame follows


def test_a_failing_filter_shows_its_line() -> None:
    error = first_error(from_iterable([1, 13]).pipe(where(is_positive), select(str)))
    frames = traceback.extract_tb(error.__traceback__)
    fused = [f for f in frames if f.filename.startswith("<rxstreams fused ")]
    assert [f.line for f in fused] == ["if not f0(x):  # filter(is_positive)"]


def test_chains_of_one_shape_share_one_cache_entry_and_survive_clearcache() -> None:
    def fused_files() -> set[str]:
        return {name for name in linecache.cache if name.startswith("<rxstreams fused ")}

    chain = from_iterable([0]).pipe(select(parse_price))
    first_error(chain)
    before = fused_files()
    for _ in range(20):
        first_error(chain)
    assert fused_files() == before

    linecache.clearcache()
    text = "".join(traceback.format_exception(first_error(chain)))
    assert "y = f0(x)  # map(parse_price)" in text
