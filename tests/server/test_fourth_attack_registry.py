"""Fourth attack on issue 13: a registry's first use in two API threads at once. The first thread
marked the registry built and then loaded it; the second read it empty meanwhile, so the first
tile requests after a start could answer "not an image any installed slide reader can open
(tried: )" for a good slide while large_image loaded its tile sources."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from slidelabel.registry import Registry


def _slow_load(registry: Registry[int]) -> None:
    time.sleep(0.2)
    registry.add("one", 1, default=True)
    registry.add("two", 2)


def test_threads_that_use_a_registry_first_together_all_see_it_whole():
    registry: Registry[int] = Registry("number", None, load=_slow_load)
    with ThreadPoolExecutor(4) as pool:
        seen = list(pool.map(lambda _: registry.names(), range(4)))
    assert seen == [["one", "two"]] * 4
    assert registry.default() == "one"


def test_a_load_that_reads_its_own_registry_sees_what_it_added_so_far():
    def load(registry: Registry[int]) -> None:
        registry.add("one", 1)
        registry.add("count", len(registry))

    registry: Registry[int] = Registry("number", None, load=load)
    assert dict(registry.items()) == {"one": 1, "count": 1}
