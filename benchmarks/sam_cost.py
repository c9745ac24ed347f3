"""What Segment Anything costs on this machine: one image embedding of a ViT-B SAM (sam-vit-base's
shape, randomly initialised: nothing is downloaded) at 1024 px, and a hover on that embedding.

A hover is what the smart tool's suggest route runs before counting superpixels: the prompt
encoder and mask decoder on the cached embedding (:func:`slidelabel.pipelines.sam.decode_point`,
one torch thread) and the outline of each of the three 256 x 256 masks
(:func:`~slidelabel.pipelines.sam.mask_outline`). The baseline, timed in the same run and
interleaved with it, is the earlier decode: ``SamModel.forward`` on the embedding, on
``--baseline-threads`` torch threads.

Prints JSON: ``embed_s`` (one forward pass of the vision encoder; skipped with
``--decoder-only``), medians and minima in ms of ``decode`` (the decoder alone), ``hover``
(decoder and outlines) and ``baseline_decode``, and the load average. On a GPU
(``--device cuda``) the decoder runs there and the outlines on the CPU.

    OMP_NUM_THREADS=1 python benchmarks/sam_cost.py --decoder-only
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def _ms(values: list[float]) -> dict[str, float]:
    return {"median": round(float(np.median(values)), 1), "min": round(float(np.min(values)), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hovers", type=int, default=20, help="point prompts decoded (default 20)")
    parser.add_argument("--baseline-threads", type=int, default=2, help="torch threads of the baseline (default 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--decoder-only", action="store_true",
                        help="time the decoder on a random embedding, skipping the minute-long encoder pass")
    args = parser.parse_args()

    import torch
    from transformers import SamConfig, SamModel

    from slidelabel.pipelines.sam import DECODE_THREADS, EMBED_THREADS, decode_point, mask_outline
    from slidelabel.pipelines.torch_threads import torch_threads

    def synchronize() -> None:
        if args.device != "cpu":
            torch.cuda.synchronize()

    torch.manual_seed(0)
    model = SamModel(SamConfig()).eval().to(args.device)  # SamConfig() is sam-vit-base's architecture
    with torch.inference_mode():
        positions_1_C_h_w = model.get_image_wide_positional_embeddings()
    embed_s = None
    with torch_threads(EMBED_THREADS), torch.inference_mode():
        if args.decoder_only:
            embeddings_1_C_h_w = torch.randn(1, 256, 64, 64, device=args.device)
        else:
            start = time.perf_counter()
            embeddings_1_C_h_w = model.get_image_embeddings(torch.rand(1, 3, 1024, 1024, device=args.device))
            synchronize()
            embed_s = round(time.perf_counter() - start, 2)

    def hover(x: float, y: float) -> tuple[float, float]:
        start = time.perf_counter()
        logits_3_h_w, _ = decode_point(model, positions_1_C_h_w, embeddings_1_C_h_w, x, y)
        decoded = time.perf_counter()
        for logits_h_w in logits_3_h_w:
            mask_outline(logits_h_w, x, y, cell_px=1024 / logits_h_w.shape[-1], valid_hw=(1024.0, 1024.0))
        return 1000 * (decoded - start), 1000 * (time.perf_counter() - start)

    def baseline(x: float, y: float) -> float:
        start = time.perf_counter()
        with torch_threads(args.baseline_threads), torch.inference_mode():
            out = model(image_embeddings=embeddings_1_C_h_w, multimask_output=True,
                        input_points=torch.tensor([[[[x, y]]]], dtype=torch.float32, device=args.device))
            out.pred_masks.cpu()
        return 1000 * (time.perf_counter() - start)

    hover(512.0, 512.0), baseline(512.0, 512.0)  # warm up
    decode_ms, hover_ms, baseline_ms = [], [], []
    for x, y in np.random.default_rng(0).uniform(0, 1024, (args.hovers, 2)):
        decoded, hovered = hover(x, y)
        decode_ms.append(decoded)
        hover_ms.append(hovered)
        baseline_ms.append(baseline(x, y))
    print(json.dumps({"model": "sam-vit-base architecture, random weights", "device": args.device,
                      "decode_threads": DECODE_THREADS, "baseline_threads": args.baseline_threads,
                      "embed_s": embed_s, "hovers": args.hovers, "decode_ms": _ms(decode_ms),
                      "hover_ms": _ms(hover_ms), "baseline_decode_ms": _ms(baseline_ms),
                      "load_average": round(os.getloadavg()[0], 1)}))


if __name__ == "__main__":
    main()
