"""What Segment Anything costs on this machine: one image embedding of a published architecture
(randomly initialised at its published shape: nothing is downloaded) at 1024 px, and a hover on
that embedding. ``--architecture``: ``sam`` (sam-vit-base), ``sam_hq`` (sam-hq-vit-base) or
``sam2`` (sam2.1-hiera-tiny), transformers' default configs of each.

A hover is what the smart tool's suggest route runs before counting superpixels: the prompt
encoder and mask decoder on the cached image features
(:func:`slidelabel.pipelines.sam_models.decode_point`, one torch thread) and the outline of each
of the three 256 x 256 masks (:func:`~slidelabel.pipelines.sam.mask_outline`). The baseline, timed
in the same run and interleaved with it, is the earlier decode: the model's ``forward`` on the
image features, on ``--baseline-threads`` torch threads.

Prints JSON: ``embed_s`` (one forward pass of the image encoder; skipped with ``--decoder-only``,
which decodes on random image features of the encoder's shapes), medians and minima in ms of
``decode`` (the decoder alone), ``hover`` (decoder and outlines) and ``baseline_decode``, and the
load average. On a GPU (``--device cuda``) the decoder runs there and the outlines on the CPU.

    OMP_NUM_THREADS=1 python benchmarks/sam_cost.py --decoder-only --architecture sam2
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np

#: The transformers config whose defaults are each architecture's published shape, and that shape.
ARCHITECTURES = {"sam": ("SamConfig", "sam-vit-base"), "sam_hq": ("SamHQConfig", "sam-hq-vit-base"),
                 "sam2": ("Sam2Config", "sam2.1-hiera-tiny")}


def _ms(values: list[float]) -> dict[str, float]:
    return {"median": round(float(np.median(values)), 1), "min": round(float(np.min(values)), 1)}


def random_features(name: str, config: Any, device: str) -> tuple:
    """Random image features of the shapes the architecture's encoder gives (what
    :meth:`~slidelabel.pipelines.sam_models.SamArchitecture.encode` keeps), image embedding first."""
    import torch

    if name == "sam2":
        sizes, hidden = config.vision_config.backbone_feature_sizes, config.mask_decoder_config.hidden_size
        return (torch.randn(1, config.vision_config.fpn_hidden_size, *sizes[2], device=device),
                torch.randn(1, hidden // 8, *sizes[0], device=device),
                torch.randn(1, hidden // 4, *sizes[1], device=device))
    vision = config.vision_config
    side = vision.image_size // vision.patch_size
    embeddings = torch.randn(1, vision.output_channels, side, side, device=device)
    if name == "sam":
        return (embeddings,)
    return embeddings, torch.randn(1, side, side, vision.hidden_size, device=device)


def forward_kwargs(name: str, features: tuple) -> dict:
    """The model ``forward``'s arguments for image features (the baseline decode)."""
    if name == "sam2":
        return {"image_embeddings": [features[1], features[2], features[0]]}
    extra = {"intermediate_embeddings": [features[1]]} if name == "sam_hq" else {}
    return {"image_embeddings": features[0], **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--architecture", choices=sorted(ARCHITECTURES), default="sam")
    parser.add_argument("--hovers", type=int, default=20, help="point prompts decoded (default 20)")
    parser.add_argument("--baseline-threads", type=int, default=2, help="torch threads of the baseline (default 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--decoder-only", action="store_true",
                        help="time the decoder on random image features, skipping the minute-long encoder pass")
    args = parser.parse_args()

    import torch
    import transformers

    from slidelabel.pipelines.sam import EMBED_THREADS, mask_outline
    from slidelabel.pipelines.sam_models import DECODE_THREADS, SAM_ARCHITECTURES, decode_point
    from slidelabel.pipelines.torch_threads import torch_threads

    def synchronize() -> None:
        if args.device != "cpu":
            torch.cuda.synchronize()

    torch.manual_seed(0)
    config_class, published = ARCHITECTURES[args.architecture]
    architecture = SAM_ARCHITECTURES[args.architecture]
    config = getattr(transformers, config_class)()
    model = getattr(transformers, architecture.model_class)(config).eval().to(args.device)
    side = config.prompt_encoder_config.image_size
    with torch.inference_mode():
        positions_1_C_h_w = model.get_image_wide_positional_embeddings()
    embed_s = None
    with torch_threads(EMBED_THREADS), torch.inference_mode():
        if args.decoder_only:
            features = random_features(args.architecture, config, args.device)
        else:
            start = time.perf_counter()
            features = architecture.encode(model, torch.rand(1, 3, side, side, device=args.device))
            synchronize()
            embed_s = round(time.perf_counter() - start, 2)

    def hover(x: float, y: float) -> tuple[float, float]:
        start = time.perf_counter()
        logits_3_h_w, _ = decode_point(architecture, model, positions_1_C_h_w, features, x, y)
        decoded = time.perf_counter()
        for logits_h_w in logits_3_h_w:
            mask_outline(logits_h_w, x, y, cell_px=side / logits_h_w.shape[-1], valid_hw=(side, side))
        return 1000 * (decoded - start), 1000 * (time.perf_counter() - start)

    def baseline(x: float, y: float) -> float:
        start = time.perf_counter()
        with torch_threads(args.baseline_threads), torch.inference_mode():
            out = model(**forward_kwargs(args.architecture, features), multimask_output=True,
                        input_points=torch.tensor([[[[x, y]]]], dtype=torch.float32, device=args.device))
            out.pred_masks.cpu()
        return 1000 * (time.perf_counter() - start)

    hover(side / 2, side / 2), baseline(side / 2, side / 2)  # warm up
    decode_ms, hover_ms, baseline_ms = [], [], []
    for x, y in np.random.default_rng(0).uniform(0, side, (args.hovers, 2)):
        decoded, hovered = hover(x, y)
        decode_ms.append(decoded)
        hover_ms.append(hovered)
        baseline_ms.append(baseline(x, y))
    print(json.dumps({"model": f"{published} architecture, random weights", "device": args.device,
                      "decode_threads": DECODE_THREADS, "baseline_threads": args.baseline_threads,
                      "embed_s": embed_s, "hovers": args.hovers, "decode_ms": _ms(decode_ms),
                      "hover_ms": _ms(hover_ms), "baseline_decode_ms": _ms(baseline_ms),
                      "load_average": round(os.getloadavg()[0], 1)}))


if __name__ == "__main__":
    main()
