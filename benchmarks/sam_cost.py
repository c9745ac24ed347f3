"""What Segment Anything costs on this machine: one image embedding of a ViT-B SAM (sam-vit-base's
shape, randomly initialised: nothing is downloaded) at 1024 px, and the prompt decoder per hover.

Prints JSON: ``embed_s`` (one forward pass of the vision encoder), ``decode_ms`` (median of
``--hovers`` point prompts through the prompt encoder and mask decoder, three masks each) and the
torch threads used. Run with ``OMP_NUM_THREADS`` set to the threads to measure:

    OMP_NUM_THREADS=2 python benchmarks/sam_cost.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--hovers", type=int, default=20, help="point prompts decoded (default 20)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--decoder-only", action="store_true",
                        help="time the decoder on a random embedding, skipping the minute-long encoder pass")
    args = parser.parse_args()

    import torch
    from transformers import SamConfig, SamModel

    from slidelabel.pipelines.torch_threads import torch_threads

    torch.manual_seed(0)
    built = time.perf_counter()
    model = SamModel(SamConfig()).eval().to(args.device)  # SamConfig() is sam-vit-base's architecture
    built = time.perf_counter() - built
    pixels_1_3_H_W = torch.rand(1, 3, 1024, 1024, device=args.device)
    with torch_threads(args.threads), torch.inference_mode():
        start = time.perf_counter()
        if args.decoder_only:
            embeddings = torch.randn(1, 256, 64, 64, device=args.device)
        else:
            embeddings = model.get_image_embeddings(pixels_1_3_H_W)
        if args.device != "cpu":
            torch.cuda.synchronize()
        embed_s = None if args.decoder_only else time.perf_counter() - start
        decode_ms = []
        rng = np.random.default_rng(0)
        for _ in range(args.hovers):
            point_1_1_1_2 = torch.tensor(rng.uniform(0, 1024, (1, 1, 1, 2)), dtype=torch.float32, device=args.device)
            start = time.perf_counter()
            out = model(image_embeddings=embeddings, input_points=point_1_1_1_2, multimask_output=True)
            out.pred_masks.cpu()
            decode_ms.append(1000 * (time.perf_counter() - start))
    print(json.dumps({"model": "sam-vit-base architecture, random weights", "device": args.device,
                      "threads": args.threads, "build_s": round(built, 2), "embed_s": embed_s and round(embed_s, 2),
                      "embedding_shape": list(embeddings.shape), "masks_shape": list(out.pred_masks.shape),
                      "decode_ms_median": round(float(np.median(decode_ms)), 1),
                      "decode_ms_min": round(float(np.min(decode_ms)), 1),
                      "decode_ms_max": round(float(np.max(decode_ms)), 1), "load_average": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
