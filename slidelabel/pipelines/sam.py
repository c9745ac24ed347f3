"""Segment Anything (``transformers`` ``SamModel``) from local weights: the image embedding of an
RGB region, then, per point prompt, the model's three masks with their predicted IoU and the
outline of each.

The weights folder is the one passed in (the ``sam_model`` setting, ``SLIDELABEL_SAM_MODEL``),
else ``$SLIDELABEL_MODELS/sam/``, else the cache's ``models/sam/``, else a Hugging Face cache
snapshot of facebook/sam-vit-base (:func:`slidelabel.pipelines.weights.find_weights`); it holds
``config.json``, the weights and the processor's config, as ``save_pretrained`` of a ``SamModel``
and a ``SamProcessor`` writes them. Nothing is ever downloaded.

Frames: the *image* is the RGB region as read (``H x W`` px); the processor resizes it so that its
long side is the model's input side (1024 px for the published models) and pads it at the bottom
and right to a square, the *input* frame; the low-resolution masks cover that square with cells of
``input_px / mask side`` px (4 px for the published models). Coordinates are continuous: pixel
``(i, j)`` spans ``[j, j + 1) x [i, i + 1)``.
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
from slidelabel.pipelines.torch_threads import torch_threads
from slidelabel.pipelines.weights import find_weights

if TYPE_CHECKING:
    import torch
    from transformers import SamModel

__all__ = ["SAM", "SAM_ENV", "ImageEmbedding", "Masks", "SamPredictor", "decode_point", "load_sam", "mask_outline",
           "sam_folder"]

logger = logging.getLogger(__name__)

SAM_ENV = "SLIDELABEL_SAM_MODEL"
#: The processor's config: ``processor_config.json`` as transformers 5 saves it, or the
#: ``preprocessor_config.json`` of the published repositories.
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
#: Torch threads of the image encoder on the CPU, and of the prompt decoder (a hover). One thread
#: for a hover: its ops are small, and on a busy machine each op of a multi-threaded pass waits for
#: its slowest thread to be scheduled (a tiny model's hover took 270 ms on 2 threads at load 8, 18 ms
#: on one).
EMBED_THREADS = min(4, os.cpu_count() or 1)
DECODE_THREADS = 1


@dataclass(frozen=True)
class SamWeights:
    """Where a Segment Anything model is published (see :class:`~slidelabel.pipelines.weights.PublishedWeights`)."""

    name: str = "sam"
    repo_id: str = "facebook/sam-vit-base"
    config_files: tuple[str, ...] = ("config.json",)
    weight_files: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")
    gated: bool = False


SAM = SamWeights()


def sam_folder(weights_dir: Path | None = None) -> Path:
    """The folder of the SAM weights (see the module's docstring); :class:`ParameterError` saying
    where to put which files when there is none, or when it lacks the processor's config."""
    folder = find_weights(SAM, weights_dir, kind="Segment Anything model", setting=SAM_ENV)
    if not any((folder / name).is_file() for name in PROCESSOR_FILES):
        raise ParameterError(f"{folder} holds SAM weights but not its processor's config ({' or '.join(PROCESSOR_FILES)}):"
                             f" run `hf download {SAM.repo_id} --local-dir {folder}` or save the SamProcessor there")
    return folder


@dataclass(frozen=True)
class ImageEmbedding:
    """A region's image embedding ``(1, C, h, w)`` and the size of the image it was computed from
    (``height x width`` px) and of that image resized into the model's input (``input_hw``)."""

    embeddings: torch.Tensor
    height: int
    width: int
    input_hw: tuple[int, int]

    def to_input(self, x: float, y: float) -> tuple[float, float]:
        """Image px to input px (continuous)."""
        return x * self.input_hw[1] / self.width, y * self.input_hw[0] / self.height

    def to_image(self, points_V_2: np.ndarray) -> np.ndarray:
        """(V, 2) ``x, y`` input px to image px (continuous)."""
        return points_V_2 * (self.width / self.input_hw[1], self.height / self.input_hw[0])


@dataclass(frozen=True)
class Masks:
    """The model's masks for one prompt: ``logits_3_h_w`` (float32, > 0 is inside) over the input
    square in cells of ``cell_px`` input px, and each mask's predicted IoU ``scores_3``."""

    logits_3_h_w: np.ndarray
    scores_3: np.ndarray
    cell_px: float


class SamPredictor:
    """A loaded SAM model and its processor, on ``device`` (None: ``cuda`` when available)."""

    def __init__(self, folder: Path, *, device: str | None = None) -> None:
        import torch
        from transformers import SamModel, SamProcessor

        self.folder = folder
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.processor = SamProcessor.from_pretrained(folder, local_files_only=True)
        model, info = SamModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32,
                                               output_loading_info=True)
        missing = sorted(info["missing_keys"]) + sorted(map(str, info["mismatched_keys"]))
        if missing:  # transformers would initialise them at random, silently
            raise ParameterError(f"{folder} lacks SAM weights: {', '.join(missing[:5])}")
        self.model = model.eval().to(self.device)
        with torch.inference_mode():  # the same for every hover: SamModel.forward would recompute it
            self.positions_1_C_h_w = self.model.get_image_wide_positional_embeddings()

    @property
    def input_px(self) -> int:
        """Long side (px) of the model's input: images are resized to it."""
        return int(self.processor.image_processor.size["longest_edge"])

    def embed(self, rgb_H_W_3: np.ndarray) -> ImageEmbedding:
        """The image embedding of a uint8 ``(H, W, 3)`` RGB image."""
        if rgb_H_W_3.ndim != 3 or rgb_H_W_3.shape[2] != 3 or rgb_H_W_3.dtype != np.uint8 or 0 in rgb_H_W_3.shape:
            raise ParameterError(f"expected a non-empty (H, W, 3) uint8 image, got {rgb_H_W_3.shape} {rgb_H_W_3.dtype}")
        import torch

        inputs = self.processor(images=rgb_H_W_3, return_tensors="pt")
        with torch_threads(EMBED_THREADS), torch.inference_mode():
            embeddings = self.model.get_image_embeddings(inputs["pixel_values"].to(self.device))
        height, width = rgb_H_W_3.shape[:2]
        input_h, input_w = (int(v) for v in inputs["reshaped_input_sizes"][0])
        return ImageEmbedding(embeddings, height, width, (input_h, input_w))

    def masks(self, embedding: ImageEmbedding, x: float, y: float) -> Masks:
        """The three masks for a foreground point at ``(x, y)`` image px (continuous)."""
        if not (0 <= x < embedding.width and 0 <= y < embedding.height):
            raise ParameterError(f"the point ({x:.1f}, {y:.1f}) is outside the {embedding.width} x "
                                 f"{embedding.height} px image")
        logits_3_h_w, scores_3 = decode_point(self.model, self.positions_1_C_h_w, embedding.embeddings,
                                              *embedding.to_input(x, y))
        return Masks(logits_3_h_w, scores_3, self.input_px / logits_3_h_w.shape[-1])


def decode_point(model: SamModel, positions_1_C_h_w: torch.Tensor, embeddings_1_C_h_w: torch.Tensor,
                 x_in: float, y_in: float) -> tuple[np.ndarray, np.ndarray]:
    """A hover's work: the prompt encoder and mask decoder only (as ``SamModel.forward`` runs them
    on image embeddings) for a foreground point at ``(x_in, y_in)`` input px, on
    :data:`DECODE_THREADS`. ``positions_1_C_h_w``: the model's
    ``get_image_wide_positional_embeddings()``, the same for every hover.

    Returns the three masks' logits ``(3, h, w)`` float32 over the input square and their
    predicted IoU ``(3,)``."""
    import torch

    device = embeddings_1_C_h_w.device
    # SAM's prompt encoder adds half a pixel itself: it takes pixel indices.
    point_1_1_1_2 = torch.tensor([[[[x_in - 0.5, y_in - 0.5]]]], dtype=torch.float32, device=device)
    label_1_1_1 = torch.ones((1, 1, 1), dtype=torch.int, device=device)
    with torch_threads(DECODE_THREADS), torch.inference_mode():
        sparse, dense = model.prompt_encoder(input_points=point_1_1_1_2, input_labels=label_1_1_1,
                                             input_boxes=None, input_masks=None)
        masks_1_1_3_h_w, iou_1_1_3 = model.mask_decoder(
            image_embeddings=embeddings_1_C_h_w, image_positional_embeddings=positions_1_C_h_w,
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=True)
    return masks_1_1_3_h_w[0, 0].float().cpu().numpy(), iou_1_1_3[0, 0].float().cpu().numpy()


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
