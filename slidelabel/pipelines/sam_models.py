"""The Segment Anything architectures slidelabel runs, by the ``model_type`` of a weights folder's
``config.json``: what loads each through ``transformers``, how it turns an RGB image into its input,
what its image encoder keeps for the hovers, and the prompt encoder and mask decoder of one hover.

==========  ==============  =========================================================================
name        model class     published weights in transformers' format (Hugging Face repositories)
==========  ==============  =========================================================================
``sam``     ``SamModel``    facebook/sam-vit-base, facebook/sam-vit-large, facebook/sam-vit-huge
``sam_hq``  ``SamHQModel``  syscv-community/sam-hq-vit-base, syscv-community/sam-hq-vit-huge
``sam2``    ``Sam2Model``   facebook/sam2.1-hiera-tiny, -small, -base-plus, -large
==========  ==============  =========================================================================

These are the repositories transformers' own docs and integration tests load. Not these: lkeab/hq-sam
(SAM-HQ's original ``.pth`` checkpoints) and facebook/sam2-hiera-*-hf (SAM 2.0, uploaded before
transformers had ``Sam2Model``, untried).

Input frames: SAM and SAM-HQ resize the image so that its long side is the input side (1024 px
published) and pad it at the bottom and right to a square; SAM 2 stretches it to the square
(1024 x 1024, the aspect ratio is not kept, as ``Sam2Processor`` and ``post_process_masks`` do).
Either way each model's low-resolution masks cover the whole square.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from slidelabel.errors import ParameterError
from slidelabel.pipelines.torch_threads import torch_threads
from slidelabel.registry import Registry

if TYPE_CHECKING:
    import torch

__all__ = ["DECODE_THREADS", "PROCESSOR_FILES", "SAM_ARCHITECTURES", "InputMaker", "ModelInput", "SamArchitecture",
           "architecture_of", "decode_point"]

#: Torch threads of the prompt decoder (a hover). One thread: its ops are small, and on a busy
#: machine each op of a multi-threaded pass waits for its slowest thread to be scheduled (a tiny
#: model's hover took 270 ms on 2 threads at load 8, 18 ms on one).
DECODE_THREADS = 1
#: The processor's config: ``processor_config.json`` as transformers 5 saves it (the image
#: processor's under ``"image_processor"``), or the ``preprocessor_config.json`` of the published
#: repositories.
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
#: SAM 2's normalisation when its processor's config names none (ImageNet's, as transformers').
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelInput:
    """An image as the model takes it: ``pixel_values_1_3_S_S`` (float32, normalised) and the
    size (``height, width`` px) of the resized image inside the ``S x S`` input square."""

    pixel_values_1_3_S_S: torch.Tensor
    input_hw: tuple[int, int]


class InputMaker(Protocol):
    """Makes the model's input from an image: ``side`` px of the input square."""

    side: int

    def __call__(self, rgb_H_W_3: np.ndarray) -> ModelInput:
        """A uint8 ``(H, W, 3)`` image as the model takes it."""


class SamArchitecture(ABC):
    """What differs between the Segment Anything models: their classes, input frame, image
    features and decoder call. ``get_image_wide_positional_embeddings``, the prompt encoder and
    the ``pred_masks`` ``(1, 1, 3, h, w)`` / ``iou_scores`` ``(1, 1, 3)`` shapes are common."""

    #: The ``transformers`` model class (its name) and the published repositories of its weights.
    model_class: str
    repos: tuple[str, ...]
    #: Whether the weights folder must hold the processor's config (:data:`PROCESSOR_FILES`).
    needs_processor_config: bool = True

    def load_model(self, folder: Path) -> Any:
        """The model of ``folder`` in float32, never downloaded; :class:`ParameterError` when
        weights are missing (transformers would initialise them at random, silently)."""
        import torch
        import transformers

        model, info = getattr(transformers, self.model_class).from_pretrained(
            folder, local_files_only=True, dtype=torch.float32, output_loading_info=True)
        missing = sorted(info["missing_keys"]) + sorted(map(str, info["mismatched_keys"]))
        if missing:
            raise ParameterError(f"{folder} lacks {self.model_class} weights: {', '.join(missing[:5])}")
        return model.eval()

    @abstractmethod
    def load_input(self, folder: Path) -> InputMaker:
        """What makes the model's input from an image, by the processor's config in ``folder``."""

    @abstractmethod
    def encode(self, model: Any, pixel_values_1_3_S_S: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The image encoder's pass: what the decoder needs for every hover, the image embedding
        ``(1, C, h, w)`` first."""

    @abstractmethod
    def decode(self, model: Any, positions_1_C_h_w: torch.Tensor, features: tuple[torch.Tensor, ...],
               sparse: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The mask decoder on the image features and the prompt's embeddings, as the model's
        ``forward`` calls it with ``multimask_output=True``: masks ``(1, 1, 3, h, w)`` and
        predicted IoU ``(1, 1, 3)``."""


def image_processor_config(folder: Path) -> dict:
    """The image processor's settings saved in ``folder`` (either of :data:`PROCESSOR_FILES`);
    empty when there are none."""
    for name in PROCESSOR_FILES:
        if (folder / name).is_file():
            config = json.loads((folder / name).read_text())
            return config.get("image_processor", config)
    return {}


class PaddedInput:
    """SAM's and SAM-HQ's transformers processor: the long side resized to ``side`` px, padded at
    the bottom and right to a square."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        self.side = int(processor.image_processor.size["longest_edge"])

    def __call__(self, rgb_H_W_3: np.ndarray) -> ModelInput:
        inputs = self.processor(images=rgb_H_W_3, return_tensors="pt")
        input_h, input_w = (int(v) for v in inputs["reshaped_input_sizes"][0])
        return ModelInput(inputs["pixel_values"], (input_h, input_w))


class _Padded(SamArchitecture):
    """SAM and SAM-HQ, whose inputs their transformers processor makes (:class:`PaddedInput`)."""

    processor_class: str

    def load_input(self, folder: Path) -> PaddedInput:
        import transformers

        return PaddedInput(getattr(transformers, self.processor_class).from_pretrained(folder, local_files_only=True))


class Sam(_Padded):
    """The original Segment Anything: its decoder reads the image embedding alone."""

    model_class, processor_class = "SamModel", "SamProcessor"
    repos = ("facebook/sam-vit-base", "facebook/sam-vit-large", "facebook/sam-vit-huge")

    def encode(self, model: Any, pixel_values_1_3_S_S: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (model.get_image_embeddings(pixel_values_1_3_S_S),)

    def decode(self, model: Any, positions_1_C_h_w: torch.Tensor, features: tuple[torch.Tensor, ...],
               sparse: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return model.mask_decoder(image_embeddings=features[0], image_positional_embeddings=positions_1_C_h_w,
                                  sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                  multimask_output=True)[:2]


class SamHQ(_Padded):
    """SAM-HQ keeps, besides the embedding, the first global-attention block's ViT features
    ``(1, h, w, D)``: the only intermediate embedding its decoder reads."""

    model_class, processor_class = "SamHQModel", "SamHQProcessor"
    repos = ("syscv-community/sam-hq-vit-base", "syscv-community/sam-hq-vit-huge")

    def encode(self, model: Any, pixel_values_1_3_S_S: torch.Tensor) -> tuple[torch.Tensor, ...]:
        embeddings, intermediate = model.get_image_embeddings(pixel_values_1_3_S_S)
        return embeddings, intermediate[0]

    def decode(self, model: Any, positions_1_C_h_w: torch.Tensor, features: tuple[torch.Tensor, ...],
               sparse: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        masks_1_1_3_h_w, iou_1_1_3 = model.mask_decoder(
            image_embeddings=features[0], image_positional_embeddings=positions_1_C_h_w,
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=True,
            hq_token_only=False, intermediate_embeddings=[features[1]])
        # SamHQMaskDecoder sorts its three masks by predicted IoU; the smart tool's scales go from
        # small to large, as SAM's mask tokens roughly are: ordered by area (cells > 0), stably.
        area_3 = (masks_1_1_3_h_w[0, 0] > 0).flatten(1).sum(1)
        order_3 = torch.sort(area_3, stable=True).indices
        return masks_1_1_3_h_w[:, :, order_3], iou_1_1_3[:, :, order_3]


@dataclass(frozen=True)
class StretchedInput:
    """SAM 2's input: the image stretched to ``side x side`` px (bilinear, antialiased), times
    ``rescale_factor``, normalised by ``mean`` and ``std`` per channel."""

    side: int
    rescale_factor: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, rgb_H_W_3: np.ndarray) -> ModelInput:
        import torch

        # Resized as uint8, as torchvision resizes a uint8 image (to the float precision of
        # Sam2ImageProcessor's pixel values, checked where torchvision is installed).
        image_1_3_H_W = torch.from_numpy(np.ascontiguousarray(rgb_H_W_3.transpose(2, 0, 1)))[None]
        resized_1_3_S_S = torch.nn.functional.interpolate(image_1_3_H_W, size=(self.side, self.side), mode="bilinear",
                                                          align_corners=False, antialias=True).float()
        mean_3_1_1 = torch.tensor(self.mean)[:, None, None]
        std_3_1_1 = torch.tensor(self.std)[:, None, None]
        return ModelInput((resized_1_3_S_S * self.rescale_factor - mean_3_1_1) / std_3_1_1, (self.side, self.side))


class Sam2(SamArchitecture):
    """SAM 2 (image prompts, no memory of video frames) keeps, besides the embedding, the decoder's
    two high-resolution feature maps (already projected by ``conv_s0``/``conv_s1``, as
    ``Sam2Model.get_image_features`` does once per image).

    Its input is made here (:class:`StretchedInput`, from the ``size``, ``rescale_factor``,
    ``image_mean`` and ``image_std`` of the processor's config), not by ``Sam2Processor``, whose
    image processor needs torchvision, which slidelabel does not install.
    """

    model_class = "Sam2Model"
    needs_processor_config = False  # without one (save_pretrained of the model alone), SAM 2's defaults
    repos = ("facebook/sam2.1-hiera-tiny", "facebook/sam2.1-hiera-small", "facebook/sam2.1-hiera-base-plus",
             "facebook/sam2.1-hiera-large")

    def load_input(self, folder: Path) -> StretchedInput:
        config = image_processor_config(folder)
        # config.json leaves out what equals the default (Sam2PromptEncoderConfig's 1024 px).
        side = json.loads((folder / "config.json").read_text()).get("prompt_encoder_config", {}).get("image_size", 1024)
        size = config.get("size", {"height": side, "width": side})
        if size.get("height") != size.get("width"):
            raise ParameterError(f"{folder}: SAM 2's input must be a square, the processor's size is {size}")
        return StretchedInput(int(size["height"]), float(config.get("rescale_factor", 1 / 255)),
                              tuple(config.get("image_mean", IMAGENET_MEAN)),
                              tuple(config.get("image_std", IMAGENET_STD)))

    def encode(self, model: Any, pixel_values_1_3_S_S: torch.Tensor) -> tuple[torch.Tensor, ...]:
        s0, s1, embeddings = model.get_image_embeddings(pixel_values_1_3_S_S)
        return embeddings, s0, s1

    def decode(self, model: Any, positions_1_C_h_w: torch.Tensor, features: tuple[torch.Tensor, ...],
               sparse: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return model.mask_decoder(image_embeddings=features[0], image_positional_embeddings=positions_1_C_h_w,
                                  sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                  multimask_output=True, high_resolution_features=list(features[1:]))[:2]


def _built_in(registry: Registry[SamArchitecture]) -> None:
    registry.add("sam", Sam(), description="Segment Anything (SamModel), ViT-B/L/H", default=True)
    registry.add("sam_hq", SamHQ(), description="SAM-HQ (SamHQModel): SAM with a high-quality mask token")
    registry.add("sam2", Sam2(), description="Segment Anything 2 (Sam2Model), Hiera tiny to large, on images")


#: Architectures by ``config.json`` ``model_type`` (transformers' ``SamConfig.model_type`` etc.).
SAM_ARCHITECTURES: Registry[SamArchitecture] = Registry("Segment Anything architecture", None, load=_built_in)


def architecture_of(folder: Path) -> tuple[str, SamArchitecture]:
    """The ``model_type`` of ``folder``'s ``config.json`` and its architecture;
    :class:`ParameterError` naming the registered ones when it is none of them."""
    try:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type", "")
    except (OSError, ValueError) as error:
        raise ParameterError(f"cannot read {folder / 'config.json'}: {error}") from None
    return model_type, SAM_ARCHITECTURES.get(model_type)


def decode_point(architecture: SamArchitecture, model: Any, positions_1_C_h_w: torch.Tensor,
                 features: tuple[torch.Tensor, ...], x_in: float, y_in: float) -> tuple[np.ndarray, np.ndarray]:
    """A hover's work: the prompt encoder and mask decoder only (as the model's ``forward`` runs
    them on image features) for a foreground point at ``(x_in, y_in)`` input px, on
    :data:`DECODE_THREADS`. ``positions_1_C_h_w``: the model's
    ``get_image_wide_positional_embeddings()``, the same for every hover; ``features``: what
    :meth:`SamArchitecture.encode` kept of the image.

    Returns the three masks' logits ``(3, h, w)`` float32 over the input square and their
    predicted IoU ``(3,)``."""
    import torch

    device = features[0].device
    # Every prompt encoder adds half a pixel itself: it takes pixel indices.
    point_1_1_1_2 = torch.tensor([[[[x_in - 0.5, y_in - 0.5]]]], dtype=torch.float32, device=device)
    label_1_1_1 = torch.ones((1, 1, 1), dtype=torch.int, device=device)
    with torch_threads(DECODE_THREADS), torch.inference_mode():
        sparse, dense = model.prompt_encoder(input_points=point_1_1_1_2, input_labels=label_1_1_1,
                                             input_boxes=None, input_masks=None)
        masks_1_1_3_h_w, iou_1_1_3 = architecture.decode(model, positions_1_C_h_w, features, sparse, dense)
    return masks_1_1_3_h_w[0, 0].float().cpu().numpy(), iou_1_1_3[0, 0].float().cpu().numpy()
