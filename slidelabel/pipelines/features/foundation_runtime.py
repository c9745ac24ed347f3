"""Running a foundation model fast: its precision, its batch size, one loaded copy per process and
batches prepared while the model runs.

- **Precision** (:func:`autocast_dtype`): ``auto`` runs a CUDA GPU under bfloat16 autocast (float16
  where the GPU has no bfloat16) and a CPU with AMX under bfloat16 autocast, which measured 3.2
  times float32's speed for ViT-L/16 on one core of this project's Xeon (0.59 -> 1.9 crops/s);
  other CPUs stay in float32 (bfloat16 without AMX was not measured faster).
- **Batch size** (:func:`batch_crops_for`): as many crops as half the free GPU memory (a quarter of
  the available RAM on a CPU) holds activations for, at most :data:`MAX_BATCH_CROPS`.
- **One model per process** (:func:`loaded_network`): successive slides and jobs of one worker
  share the network loaded for a backbone, weights folder and device (two at most are kept), and
  take turns on it, so that one batch sized to the free memory runs at a time while the feature
  driver's other threads read and decode tiles.
- **Prefetching** (:func:`prefetched`): a helper thread cuts, pads and stacks the next batch's
  crops while the model runs on the current one.
- **Crops seen before** (:class:`TokenCache`): the tokens of a crop already encoded, by the digest
  of its pixels, are not computed again.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

import numpy as np

from slidelabel.errors import ParameterError

if TYPE_CHECKING:
    import torch

__all__ = ["MAX_BATCH_CROPS", "LoadedNetwork", "Precision", "TokenCache", "autocast_dtype", "batch_crops_for",
           "clear_networks", "default_device", "free_memory_bytes", "loaded_network", "prefetched"]

T = TypeVar("T")

Precision = Literal["auto", "float32", "bfloat16", "float16"]
PRECISIONS: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")
#: Largest batch per device kind: a GPU's throughput levels off by a few hundred crops; a CPU's by
#: a few crops, where a bigger batch only holds more memory.
MAX_BATCH_CROPS = {"cuda": 512, "cpu": 16}
#: Share of the free memory a batch's activations may take: the rest is for the weights' casts,
#: the tokens copied back and the other threads of the process.
MEMORY_SHARE = {"cuda": 0.5, "cpu": 0.25}
#: Loaded networks kept per process (a third backbone or device evicts the least recently used).
KEPT_NETWORKS = 2


def _cpu_has_amx() -> bool:
    import torch

    try:  # how torch itself asks for AMX; private, hence the guard
        return bool(torch._C._cpu._init_amx())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(device: str, precision: Precision = "auto") -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (a torch device string); None = float32.

    ``auto`` is bfloat16 on a CUDA GPU that supports it (else float16) and on a CPU with AMX,
    float32 elsewhere (see the module's docstring for the measurement).
    """
    import torch

    if precision not in PRECISIONS:
        raise ParameterError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    kind = torch.device(device).type
    if precision == "auto":
        if kind == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if kind == "cpu" and _cpu_has_amx() else None
    return None if precision == "float32" else getattr(torch, precision)


def free_memory_bytes(device: str) -> int:
    """Bytes free for a batch on ``device``: the GPU's free memory (``torch.cuda.mem_get_info``,
    plus what torch's allocator keeps cached), or the RAM the system reports available (psutil) for a CPU."""
    import torch

    device_ = torch.device(device)
    if device_.type == "cuda":
        # Memory torch's allocator holds but no tensor uses is free to this process too.
        cached = torch.cuda.memory_reserved(device_) - torch.cuda.memory_allocated(device_)
        return int(torch.cuda.mem_get_info(device_)[0]) + cached
    import psutil

    return int(psutil.virtual_memory().available)


def batch_crops_for(crop_bytes: int, free_bytes: int, device_kind: str) -> int:
    """Crops per forward pass: how many crops of ``crop_bytes`` activations each fit in the
    :data:`MEMORY_SHARE` of ``free_bytes`` on a ``device_kind`` (``cuda``, ``cpu``...) device,
    between 1 and :data:`MAX_BATCH_CROPS`.

    Examples
    --------
    >>> batch_crops_for(10 * 2**20, 8 * 2**30, "cuda"), batch_crops_for(10 * 2**20, 2**20, "cuda")
    (409, 1)
    """
    if crop_bytes <= 0 or free_bytes < 0:
        raise ValueError(f"crop_bytes must be > 0 and free_bytes >= 0, got {crop_bytes} and {free_bytes}")
    kind = device_kind if device_kind in MAX_BATCH_CROPS else "cpu"
    fitting = int(free_bytes * MEMORY_SHARE[kind]) // crop_bytes
    return max(1, min(MAX_BATCH_CROPS[kind], fitting))


@dataclass
class LoadedNetwork:
    """A loaded network and the lock its users take turns on (one forward pass at a time)."""

    net: Callable
    lock: threading.Lock = field(default_factory=threading.Lock)


_networks: OrderedDict[Hashable, LoadedNetwork] = OrderedDict()
_networks_lock = threading.Lock()


def _stamp(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and modification times of the files in ``folder``: new weights, a new load."""
    return tuple(sorted((p.name, s.st_size, s.st_mtime_ns) for p in folder.iterdir() if p.is_file()
                        for s in (p.stat(),)))


def loaded_network(key: Hashable, folder: Path, device: str, load: Callable[[], Callable]) -> LoadedNetwork:
    """The network of ``key`` (a backbone) in ``folder`` on ``device``, calling ``load()`` only
    when this process has not loaded it already (or the folder's files changed since)."""
    cache_key = (key, Path(folder).resolve(), device, _stamp(Path(folder)))
    with _networks_lock:  # one load at a time: two threads asking at once get one network
        found = _networks.get(cache_key)
        if found is None:
            found = _networks[cache_key] = LoadedNetwork(load())
            while len(_networks) > KEPT_NETWORKS:
                _networks.popitem(last=False)
        _networks.move_to_end(cache_key)
        return found


def clear_networks() -> None:
    """Forget every loaded network (their memory goes once no encoder runs them)."""
    with _networks_lock:
        _networks.clear()


def prefetched(items: Iterable[T], *, ahead: int = 1) -> Iterator[T]:
    """The items of ``items`` in order, each made by a helper thread while the caller works on
    the one before; at most ``ahead`` made and waiting. An error making one is raised here."""
    if ahead < 1:
        raise ValueError(f"ahead must be >= 1, got {ahead}")
    executor = ThreadPoolExecutor(1, thread_name_prefix="slidelabel-prefetch")
    end = object()
    iterator = iter(items)
    try:
        # One helper thread calls next() in submission order, so items come out in order.
        waiting: deque[Future] = deque(executor.submit(next, iterator, end) for _ in range(ahead))
        while True:
            item = waiting.popleft().result()
            if item is end:
                return
            waiting.append(executor.submit(next, iterator, end))
            yield item
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def default_device() -> str:
    """``cuda`` when torch sees a GPU, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class TokenCache:
    """Tokens of recently encoded crops by a digest of their pixels, the least recently used
    dropped beyond ``max_bytes``; safe to share between threads.

    The feature driver encodes each block of a tile with a margin of one crop, so neighbouring
    blocks cut many of the same crops; glass crops repeat too. A crop's tokens depend only on its
    pixels, so those found here are not run again.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def key(crop_h_w_3: np.ndarray) -> bytes:
        """The digest of a C-contiguous crop's pixels (and shape)."""
        return hashlib.blake2b(crop_h_w_3, digest_size=16, person=str(crop_h_w_3.shape).encode()[:16]).digest()

    def get(self, key: bytes) -> np.ndarray | None:
        with self._lock:
            tokens = self._entries.get(key)
            if tokens is not None:
                self._entries.move_to_end(key)
            return tokens

    def put(self, key: bytes, tokens: np.ndarray) -> None:
        """Keep ``tokens`` (not copied: the caller no longer writes to them)."""
        if tokens.nbytes > self.max_bytes:
            return
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = tokens
            self._bytes += tokens.nbytes
            while self._bytes > self.max_bytes:
                self._bytes -= self._entries.popitem(last=False)[1].nbytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
