"""Segment Anything from local weights: the image embedding of an RGB region, then, per point
prompt, the model's three masks with their predicted IoU and the outline of each.

The weights folder is the one passed in (the ``sam_model`` setting, ``SLIDELABEL_SAM_MODEL``),
else ``$SLIDELABEL_MODELS/sam/``, else the cache's ``models/sam/``, else a Hugging Face cache
snapshot of facebook/sam-vit-base (:func:`slidelabel.pipelines.weights.find_weights`); it holds
``config.json``, the weights and the processor's config, as ``save_pretrained`` writes them. Its
``config.json`` ``model_type`` picks the architecture
(:data:`~slidelabel.pipelines.sam_models.SAM_ARCHITECTURES`): ``sam`` (facebook/sam-vit-base,
-large, -huge), ``sam_hq`` (syscv-community/sam-hq-vit-base, -huge) or ``sam2``
(facebook/sam2.1-hiera-tiny, -small, -base-plus, -large), all in transformers' format. Nothing is
ever downloaded.

Frames: the *image* is the RGB region as read (``H x W`` px); the model's *input* is a square
(1024 px for the published models) holding the image resized: SAM and SAM-HQ keep its aspect
(long side to the square's, padded at the bottom and right), SAM 2 stretches it to the whole
square. :class:`ImageEmbedding` maps between the two. The low-resolution masks cover the input
square with cells of ``input_px / mask side`` px (4 px for the published models). Coordinates are
continuous: pixel ``(i, j)`` spans ``[j, j + 1) x [i, i + 1)``.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from slidelabel.errors import ParameterError
from slidelabel.pipelines.sam_models import PROCESSOR_FILES, architecture_of, decode_point
from slidelabel.pipelines.torch_threads import torch_threads
from slidelabel.pipelines.weights import find_weights

if TYPE_CHECKING:
    import torch

__all__ = ["SAM", "SAM_ENV", "ImageEmbedding", "Masks", "SamPredictor", "load_sam", "mask_outline", "sam_folder"]

logger = logging.getLogger(__name__)

SAM_ENV = "SLIDELABEL_SAM_MODEL"
#: Torch threads of the image encoder on the CPU (a hover's are
#: :data:`~slidelabel.pipelines.sam_models.DECODE_THREADS`).
EMBED_THREADS = min(4, os.cpu_count() or 1)


@dataclass(frozen=True)
class SamWeights:
    """Where the default Segment Anything model is published (see
    :class:`~slidelabel.pipelines.weights.PublishedWeights`); other architectures' weights are
    found in the same folders, or named by the ``sam_model`` setting."""

    name: str = "sam"
    repo_id: str = "facebook/sam-vit-base"
    config_files: tuple[str, ...] = ("config.json",)
    weight_files: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")
    gated: bool = False


SAM = SamWeights()


def sam_folder(weights_dir: Path | None = None) -> Path:
    """The folder of the SAM weights (see the module's docstring); :class:`ParameterError` saying
    where to put which files when there is none, when its ``model_type`` is no registered
    architecture, or when it lacks the processor's config that its architecture needs."""
    folder = find_weights(SAM, weights_dir, kind="Segment Anything model", setting=SAM_ENV)
    _, architecture = architecture_of(folder)
    if architecture.needs_processor_config and not any((folder / name).is_file() for name in PROCESSOR_FILES):
        raise ParameterError(f"{folder} holds SAM weights but not its processor's config"
                             f" ({' or '.join(PROCESSOR_FILES)}): run `hf download {architecture.repos[0]}"
                             f" --local-dir {folder}` or save its processor there")
    return folder


@dataclass(frozen=True)
class ImageEmbedding:
    """A region's image embedding ``(1, C, h, w)``, the size of the image it was computed from
    (``height x width`` px) and of that image resized into the model's input (``input_hw``, input
    px), and what else of the image encoder's pass the architecture's decoder reads (``extra``:
    SAM-HQ's early ViT features, SAM 2's high-resolution feature maps)."""

    embeddings: torch.Tensor
    height: int
    width: int
    input_hw: tuple[int, int]
    extra: tuple[torch.Tensor, ...] = ()

    def to_input(self, x: float, y: float) -> tuple[float, float]:
        """Image px to input px (continuous)."""
        return x * self.input_hw[1] / self.width, y * self.input_hw[0] / self.height

    def to_image(self, points_V_2: np.ndarray) -> np.ndarray:
        """(V, 2) ``x, y`` input px to image px (continuous)."""
        return points_V_2 * (self.width / self.input_hw[1], self.height / self.input_hw[0])


@dataclass(frozen=True)
class Masks:
    """The model's masks for one prompt, from small to large: ``logits_3_h_w`` (float32, > 0 is
    inside) over the input square in cells of ``cell_px`` input px, and each mask's predicted IoU
    ``scores_3``."""

    logits_3_h_w: np.ndarray
    scores_3: np.ndarray
    cell_px: float


class SamPredictor:
    """A loaded Segment Anything model of the architecture its folder's ``config.json`` names
    (``model_type``), and what makes its input, on ``device`` (None: ``cuda`` when available)."""

    def __init__(self, folder: Path, *, device: str | None = None) -> None:
        import torch

        self.folder = folder
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model_type, self.architecture = architecture_of(folder)
        self.make_input = self.architecture.load_input(folder)
        self.model = self.architecture.load_model(folder).to(self.device)
        with torch.inference_mode():  # the same for every hover: the model's forward would recompute it
            self.positions_1_C_h_w = self.model.get_image_wide_positional_embeddings()

    @property
    def input_px(self) -> int:
        """Side (px) of the model's square input: an image's long side is resized to it."""
        return self.make_input.side

    def embed(self, rgb_H_W_3: np.ndarray) -> ImageEmbedding:
        """The image embedding of a uint8 ``(H, W, 3)`` RGB image (the image encoder's one pass)."""
        if rgb_H_W_3.ndim != 3 or rgb_H_W_3.shape[2] != 3 or rgb_H_W_3.dtype != np.uint8 or 0 in rgb_H_W_3.shape:
            raise ParameterError(f"expected a non-empty (H, W, 3) uint8 image, got {rgb_H_W_3.shape} {rgb_H_W_3.dtype}")
        import torch

        model_input = self.make_input(rgb_H_W_3)
        with torch_threads(EMBED_THREADS), torch.inference_mode():
            embeddings, *extra = self.architecture.encode(self.model, model_input.pixel_values_1_3_S_S.to(self.device))
        height, width = rgb_H_W_3.shape[:2]
        return ImageEmbedding(embeddings, height, width, model_input.input_hw, tuple(extra))

    def masks(self, embedding: ImageEmbedding, x: float, y: float) -> Masks:
        """The three masks for a foreground point at ``(x, y)`` image px (continuous): the prompt
        encoder and mask decoder only (:func:`~slidelabel.pipelines.sam_models.decode_point`)."""
        if not (0 <= x < embedding.width and 0 <= y < embedding.height):
            raise ParameterError(f"the point ({x:.1f}, {y:.1f}) is outside the {embedding.width} x "
                                 f"{embedding.height} px image")
        logits_3_h_w, scores_3 = decode_point(self.architecture, self.model, self.positions_1_C_h_w,
                                              (embedding.embeddings, *embedding.extra), *embedding.to_input(x, y))
        return Masks(logits_3_h_w, scores_3, self.input_px / logits_3_h_w.shape[-1])


@functools.lru_cache(maxsize=2)
def load_sam(folder: Path, device: str | None = None) -> SamPredictor:
    """The predictor of ``folder`` (see :func:`sam_folder`), loaded once per process."""
    logger.info("loading Segment Anything from %s", folder)
    return SamPredictor(folder, device=device)


def mask_outline(logits_h_w: np.ndarray, x: float, y: float, *, cell_px: float,
                 valid_hw: tuple[float, float]) -> np.ndarray:
    """The outline of one mask, as a ring of input px.

    Parameters
    ----------
    logits_h_w : a mask's logits over the input square (> 0 is inside), cells of ``cell_px`` input px.
    x, y : the prompt, input px: of the mask's parts (8-connected cells), the one under it is
        taken, else the largest; its holes are filled.
    valid_hw : height and width (input px) of the resized image; the padding beyond is outside.

    Returns
    -------
    (V, 2) float ``x, y`` vertices (input px) of a ring through the midpoints of the cell edges
    its boundary crosses, collinear vertices dropped, ``V >= 3``; (0, 2) when the mask is empty.
    """
    from scipy import ndimage
    from skimage.measure import find_contours

    rows = min(logits_h_w.shape[0], int(np.ceil(valid_hw[0] / cell_px)))
    cols = min(logits_h_w.shape[1], int(np.ceil(valid_hw[1] / cell_px)))
    parts_h_w, count = ndimage.label(logits_h_w[:rows, :cols] > 0, structure=np.ones((3, 3), bool))
    if count == 0:
        return np.zeros((0, 2))
    row, col = int(y // cell_px), int(x // cell_px)
    part = parts_h_w[row, col] if 0 <= row < rows and 0 <= col < cols else 0
    if part == 0:
        part = int(np.argmax(np.bincount(parts_h_w.ravel())[1:])) + 1
    # Traced in the part's bounding box only (a ViT-B mask is 256 x 256 cells); a border of
    # "outside" closes the contour; one part, holes filled, has one outer boundary.
    box_rows, box_cols = ndimage.find_objects(parts_h_w, max_label=part)[part - 1]
    inside_h_w = np.pad(ndimage.binary_fill_holes(parts_h_w[box_rows, box_cols] == part), 1).astype(np.float32)
    ring = max(find_contours(inside_h_w, 0.5), key=len)[:-1]  # closed: the last vertex is the first
    ring = ring + (box_rows.start, box_cols.start)
    # Straight runs (along cell edges and 45-degree diagonals) down to their ends; a douglas-peucker
    # simplification costs more than the decoder.
    turn_V = np.cross(ring - np.roll(ring, 1, axis=0), np.roll(ring, -1, axis=0) - ring)
    ring = ring[np.abs(turn_V) > 1e-9]
    # (row, col) of padded cell centres to input px: centre of cell (i, j) is ((j + 0.5) c, (i + 0.5) c).
    return (ring[:, ::-1] - 0.5) * cell_px if len(ring) >= 3 else np.zeros((0, 2))
