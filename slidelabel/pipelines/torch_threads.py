"""Running torch on a chosen number of CPU threads.

Torch's thread count is process-wide; every torch model of slidelabel sets it for its own work
with :func:`torch_threads` and gives the caller's setting back.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextmanager
def torch_threads(n_threads: int) -> Iterator[None]:
    """Run torch on ``n_threads`` threads, restoring the process's setting afterwards."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
