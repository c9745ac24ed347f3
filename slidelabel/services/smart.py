"""The smart tool's suggestions: Segment Anything's three masks at the cursor as superpixels and
outlines, or, without SAM weights, the classical regions grown to similar superpixels.

The viewer asks for the embedding of the region in view once (:func:`embed_region`, seconds on a
CPU for a ViT-B); each hover then costs only the prompt decoder and the coverage count
(:func:`suggest`). The region is read at the resolution where its long side fits the model's input
(1024 px), from the slide reader the project uses; embeddings are kept in a small in-process LRU
keyed by model, slide file (path and version) and region, and computed :data:`EMBEDDERS` at a time
(a request that waits longer than :data:`EMBED_WAIT_S` is answered busy, 503).

A mask becomes (a) its outline in level-0 px, the boundary around the prompt (holes filled), and
(b) the superpixels that outline covers by at least half of their pixels, counted as the polygon
and lasso tools count (:func:`slidelabel.services.shapes.covered_superpixels`, at the label-map
level the viewer shows): what the pathologist sees outlined is what a click labels.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import numpy as np
from large_image.constants import TILE_FORMAT_NUMPY
from sqlalchemy.orm import Session

from slidelabel.errors import ParameterError, SlideUnreadableError
from slidelabel.pipelines.pinned_files import PinnedFile
from slidelabel.pipelines.sam import ImageEmbedding, SamPredictor, load_sam, mask_outline, sam_folder
from slidelabel.pipelines.slide_readers import READ_ERRORS
from slidelabel.services import region_growing, shapes
from slidelabel.services.slide_paths import slide_file
from slidelabel.services.tiles import TileGrid, label_map, slide_source, superpixel_table
from slidelabel.services.turns import Turns
from slidelabel.settings import Settings
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Project, Slide

logger = logging.getLogger(__name__)

#: Region embeddings kept per process: a ViT-B SAM's is 256 x 64 x 64 float32, 4 MB; with SAM-HQ's
#: early ViT features 17 MB, with SAM 2's high-resolution feature maps 17 MB.
EMBEDDINGS = 8
#: Smallest side of a region (level-0 px).
MIN_REGION_PX = 16
#: Region embeddings computed at once per process: a ViT-B SAM's image encoder holds 1.8 GB
#: above its weights while it runs (23 s on one CPU thread), so parallel requests would add up.
EMBEDDERS = 1
#: How long a request waits for an embedder before it is answered "busy" (s): about one ViT-B
#: embedding on a CPU.
EMBED_WAIT_S = 30.0

#: Why the smart tool is classical, as a member other than the admin reads it: the reason itself
#: names the server's folders and how to fill them, which only the admin needs.
NO_WEIGHTS_NOTE = ("no usable Segment Anything weights are installed on this server (such as facebook/sam-vit-base): "
                   "the smart tool proposes regions grown to similar superpixels instead; the admin can install them")

#: ``(left, top, right, bottom)`` in level-0 px, right and bottom exclusive.
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class RegionEmbedding:
    """The embedding of a slide region (``region_level0``, clipped to the slide) read at
    ``downsample`` level-0 px per image px, and how long it took to compute (s)."""

    region_level0: Box
    downsample: float
    image: ImageEmbedding
    seconds: float


@dataclass(frozen=True)
class Suggestion:
    """One scale: the superpixel ids taken (ascending), the outline ((V, 2) level-0 px; empty for
    classical regions) and the model's predicted IoU (None for classical regions)."""

    superpixels: np.ndarray
    outline_level0: np.ndarray
    score: float | None


@dataclass(frozen=True)
class Suggestions:
    """What the smart tool shows: ``basis`` ``"sam"`` or ``"classical"``, three scales from small
    to large (none when the cursor rests off the superpixels, classically), and when classical
    why (no weights found)."""

    basis: str
    scales: list[Suggestion]
    note: str = ""


class _Embeddings:
    """A thread-safe LRU of region embeddings (the API answers in a thread pool)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple, RegionEmbedding] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> RegionEmbedding | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
            return self._items.get(key)

    def put(self, key: tuple, value: RegionEmbedding) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


_EMBEDDINGS = _Embeddings(EMBEDDINGS)
_EMBEDDERS = Turns(EMBEDDERS)
#: Smart-tool requests (grow, scales, Segment Anything) run at once per API process; the others
#: wait on the event loop, so requests queued behind the embedding and measuring turns hold at most
#: this many of the API's request threads.
SMART_REQUESTS = 4
#: Seconds a smart-tool request waits to run before it is answered busy (503).
SMART_WAIT_S = 30.0
#: Smart-tool turns one user holds at once: one user's parallel requests cannot take them all.
SMART_PER_USER = 2
_SMART_REQUESTS = Turns(SMART_REQUESTS, per_holder=SMART_PER_USER)


def smart_turn_waiting(user_id: int | None = None) -> AbstractAsyncContextManager[None]:
    """A turn to run one smart-tool request, waited for on the event loop; ``user_id`` holds at
    most :data:`SMART_PER_USER` at once."""
    return _SMART_REQUESTS.waiting(SMART_WAIT_S, f"the smart tool is busy with other requests (yours, or "
                                                 f"{SMART_REQUESTS} at once) for over {SMART_WAIT_S:.0f} s; try again",
                                   holder=user_id)


def sam_model(settings: Settings) -> tuple[SamPredictor | None, str]:
    """The SAM predictor of the settings' weights (see :func:`slidelabel.pipelines.sam.sam_folder`),
    or None and why when there are none."""
    try:
        folder = sam_folder(settings.sam_model)
    except ParameterError as error:
        (logger.warning if settings.sam_model else logger.debug)("smart tool without SAM: %s", error)
        return None, str(error)
    return load_sam(folder), ""


def note_for(note: str, *, admin: bool) -> str:
    """A classical basis's ``note`` (from :func:`sam_model`) as a member reads it: whole for the
    admin, :data:`NO_WEIGHTS_NOTE` for the others (no server paths)."""
    return note if admin or not note else NO_WEIGHTS_NOTE


def clipped_region(region_level0: tuple[float, float, float, float], width: int, height: int) -> Box:
    """The region's whole level-0 px inside a ``width x height`` slide; :class:`ParameterError`
    when less than :data:`MIN_REGION_PX` of it is."""
    left, top = max(0, int(np.floor(region_level0[0]))), max(0, int(np.floor(region_level0[1])))
    right, bottom = min(width, int(np.ceil(region_level0[2]))), min(height, int(np.ceil(region_level0[3])))
    if right - left < MIN_REGION_PX or bottom - top < MIN_REGION_PX:
        raise ParameterError(f"the region {tuple(region_level0)} has less than {MIN_REGION_PX} x {MIN_REGION_PX} "
                             f"level-0 px on the {width} x {height} px slide")
    return left, top, right, bottom


def read_region(slide: PinnedFile, box: Box, long_side_px: int) -> tuple[np.ndarray, float]:
    """The RGB ``(H, W, 3)`` uint8 pixels of ``box`` (level-0 px) with the long side at most
    ``long_side_px``, and the level-0 px per image px; white where the slide has no pixels."""
    source = slide_source(slide)
    region = {"left": box[0], "top": box[1], "right": box[2], "bottom": box[3], "units": "base_pixels"}
    try:
        pixels, _ = source.getRegion(region=region, output={"maxWidth": long_side_px, "maxHeight": long_side_px},
                                     format=TILE_FORMAT_NUMPY)
    except READ_ERRORS as error:
        raise SlideUnreadableError(slide.path, f"cannot read region {region}: {error}") from None
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    rgb = np.repeat(pixels, 3, axis=2) if pixels.shape[2] < 3 else pixels[:, :, :3].copy()
    if pixels.shape[2] in (2, 4):  # transparent where nothing was scanned: white, as the viewer shows it
        rgb[pixels[:, :, -1] == 0] = 255
    return rgb, (box[2] - box[0]) / rgb.shape[1]


def embed_region(settings: Settings, slide: Slide, region_level0: tuple[float, float, float, float],
                 ) -> tuple[RegionEmbedding | None, bool, str]:
    """The embedding of the slide region (computed, or from the cache), whether it was cached, and
    (None, False, why) when no SAM weights are installed."""
    predictor, why = sam_model(settings)
    if predictor is None:
        return None, False, why
    return (*_embedded(predictor, slide, region_level0), "")


def _embedded(predictor: SamPredictor, slide: Slide,
              region_level0: tuple[float, float, float, float]) -> tuple[RegionEmbedding, bool]:
    pinned = slide_file(slide)
    grid = TileGrid.of(slide_source(pinned))
    box = clipped_region(region_level0, grid.width, grid.height)
    key = (str(predictor.folder), str(pinned.path), pinned.version, box, predictor.input_px)
    found = _EMBEDDINGS.get(key)
    if found is not None:
        return found, True
    with _EMBEDDERS.hold(EMBED_WAIT_S, f"the smart tool is busy with other regions (over {EMBED_WAIT_S:.0f} s); "
                                       "try again"):
        found = _EMBEDDINGS.get(key)  # computed for another request while this one waited
        if found is not None:
            return found, True
        start = time.perf_counter()
        rgb, downsample = read_region(pinned, box, predictor.input_px)
        embedding = RegionEmbedding(box, downsample, predictor.embed(rgb), time.perf_counter() - start)
        _EMBEDDINGS.put(key, embedding)
    return embedding, False


def suggest(session: Session, settings: Settings, project: Project, slide: Slide, *, x_level0: float,
            y_level0: float, region_level0: tuple[float, float, float, float], downsample: float) -> Suggestions:
    """The smart tool's three scales at ``(x_level0, y_level0)``: SAM's masks over the region's
    embedding (computed first if not cached), or the classical regions grown from the superpixel
    there (:func:`slidelabel.services.region_growing.grow_at_scales`) without SAM weights. Coverage is
    counted at the label-map level shown at ``downsample`` level-0 px per screen pixel."""
    folder = ProjectFiles(settings.data_dir, slide.project_id).superpixels(slide.id)
    labels = label_map(folder)
    predictor, why = sam_model(settings)
    if predictor is None:
        seed = int(labels.sample(np.array([x_level0]), np.array([y_level0]), 0)[0, 0])
        if seed == 0:
            return Suggestions("classical", [], why)
        grown = region_growing.grow_at_scales(session, settings.data_dir, project, slide, seed=seed)
        return Suggestions("classical", [Suggestion(np.sort(g.superpixels), np.zeros((0, 2)), None) for g in grown],
                           why)
    embedding, _ = _embedded(predictor, slide, region_level0)
    left, top, right, bottom = embedding.region_level0
    if not (left <= x_level0 < right and top <= y_level0 < bottom):
        raise ParameterError(f"the point ({x_level0:.0f}, {y_level0:.0f}) is outside the region "
                             f"{embedding.region_level0} (level-0 px)")
    image, scale = embedding.image, embedding.downsample
    # The image's sides are the region's divided by ``scale``, rounded: keep the last row and column.
    x_image = min((x_level0 - left) / scale, image.width - 1e-3)
    y_image = min((y_level0 - top) / scale, image.height - 1e-3)
    masks = predictor.masks(image, x_image, y_image)
    table = superpixel_table(folder)
    point_in = image.to_input(x_image, y_image)
    scales = []
    for logits_h_w, score in zip(masks.logits_3_h_w, masks.scores_3):
        ring_in = mask_outline(logits_h_w, *point_in, cell_px=masks.cell_px, valid_hw=image.input_hw)
        outline_level0 = image.to_image(ring_in) * scale + (left, top)
        covered = (shapes.covered_superpixels(labels, table.bbox_level0, table.area_px, outline_level0,
                                              downsample=downsample).superpixels
                   if len(outline_level0) >= 3 else np.zeros(0, np.int64))
        scales.append(Suggestion(covered, outline_level0, float(score)))
    return Suggestions("sam", scales)
