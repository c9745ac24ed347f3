"""Foundation-model benchmark: crops per second of the ``foundation`` extractor's encoder.

Prints one JSON object. For UNI's architecture (ViT-L/16, 224 px) and UNI2-h's (ViT-H/14 with
registers and SwiGLU; the :data:`~slidelabel.pipelines.features.foundation.BACKBONES` entries),
randomly initialised (throughput does not need the real weights, which are gated), saved as a
bfloat16 safetensors file and run through :class:`FoundationEncoder` as a slide's windows are
(crops cut and padded from a window of real MoNuSeg tissue, batches prepared by the prefetch
thread, features copied back as float32; the token cache off, so that every crop runs):

Wall-clock rates (``crops_per_s``) drop when other processes share the cores; ``crops_per_cpu_s``
(crops per second of this process's CPU time) does not, so both are given, with the load average.

* ``cpu``: on ``--threads`` torch threads (default 1, as a single-threaded worker runs), at the
  encoder's defaults (its batch from the available RAM, bfloat16 autocast where the CPU has AMX)
  and, in the same run, the baseline of the encoder before this work: float32, one crop per
  forward pass. Each is timed over ``--batches`` batches after one warm-up batch.
* ``cuda``: the same when torch sees a GPU (bfloat16 autocast, batch from the free GPU memory),
  with the float32, one-crop baseline, and the target: at least 1,000 crops/s for ViT-L/16 on
  one H100. Absent, with the reason, when there is none.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/foundation.py [--models uni,uni2] [--batches 2]
[--cpu-batch 4]`` (a smaller CPU batch for a quicker run on a busy machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from slidelabel.pipelines.features.foundation import BACKBONES, FoundationEncoder, TimmBackbone
from slidelabel.pipelines.features.foundation_runtime import autocast_dtype, clear_networks, free_memory_bytes
from slidelabel.pipelines.features.vit import VisionTransformer

MONUSEG = Path(__file__).resolve().parents[2] / "shared" / "data" / "monuseg-train" / "images"
#: Target of issue 15 for ViT-L/16 on one H100.
TARGET_CROPS_PER_S = 1000


def save_random_weights(backbone: TimmBackbone, folder: Path) -> Path:
    """A randomly initialised network of ``backbone``'s architecture, saved where the encoder
    looks (bfloat16 safetensors: half the bytes; the encoder loads them as float32)."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    state = {k: v.to(torch.bfloat16).contiguous() for k, v in VisionTransformer(backbone.vit).state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, folder / "model.safetensors")
    return folder


def tissue_window(crops: int, crop_px: int) -> np.ndarray:
    """A uint8 RGB window of real tissue, ``crop_px`` high, holding exactly ``crops`` crops side by
    side: the MoNuSeg images cut into crops, taken in turn."""
    pieces = []
    for path in sorted(MONUSEG.glob("*.png")):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        side = rgb.shape[0] // crop_px
        pieces += [rgb[r * crop_px : (r + 1) * crop_px, c * crop_px : (c + 1) * crop_px]
                   for r in range(side) for c in range(side)]
    return np.ascontiguousarray(np.concatenate([pieces[i % len(pieces)] for i in range(crops)], axis=1))


def crops_per_second(encoder: FoundationEncoder, batches: int) -> dict:
    """Crops per second of ``encoder`` over a window of ``batches`` of its batches, after a
    warm-up window of one batch (loading the network, first-call kernels)."""
    batch = encoder.crops_per_batch()
    crop_px = encoder.backbone.crop_px
    encoder.encode(tissue_window(batch, crop_px))
    window = tissue_window(batch * batches, crop_px)
    started, cpu_started = time.perf_counter(), time.process_time()
    cells_h_w_K = encoder.encode(window)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    assert np.isfinite(cells_h_w_K).all()
    dtype = autocast_dtype(encoder.device, encoder.precision)
    return {"crops_per_s": round(batch * batches / seconds, 3), "batch_crops": batch, "crops": batch * batches,
            "seconds": round(seconds, 2), "crops_per_cpu_s": round(batch * batches / cpu_seconds, 3), "autocast": "float32" if dtype is None else str(dtype).removeprefix("torch.")}


def run_device(device: str, folders: dict[str, Path], *, threads: int, batches: int, baseline_crops: int,
               batch_crops: int | None = None) -> dict:
    """Per model: the encoder's defaults on ``device`` and the float32, one-crop baseline."""
    results: dict = {"free_memory_gib": round(free_memory_bytes(device) / 2**30, 1)}
    for name, folder in folders.items():
        backbone = BACKBONES[name]
        fast = crops_per_second(FoundationEncoder(backbone, folder, device=device, n_threads=threads,
                                                  batch_crops=batch_crops, cache_mb=0), batches)
        baseline = crops_per_second(FoundationEncoder(backbone, folder, device=device, n_threads=threads,
                                                      batch_crops=1, precision="float32", cache_mb=0), baseline_crops)
        results[name] = {"architecture": _architecture(backbone), "default": fast, "baseline_float32_batch1": baseline,
                         "speedup": round(fast["crops_per_s"] / baseline["crops_per_s"], 2)}
        clear_networks()  # one model in memory at a time
    return results


def _architecture(backbone: TimmBackbone) -> str:
    vit = backbone.vit
    return (f"ViT depth {vit.depth}, width {vit.embed_dim}, patch {vit.patch_px} px, {vit.img_px} px crops, "
            f"{vit.reg_tokens} registers, {'SwiGLU' if vit.swiglu else 'GELU'} MLP {vit.mlp_hidden}")


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="uni,uni2", help="Comma-separated timm backbones (default: uni,uni2).")
    parser.add_argument("--threads", type=int, default=1, help="Torch threads on the CPU (default 1).")
    parser.add_argument("--batches", type=int, default=2, help="Timed batches per measurement (default 2).")
    parser.add_argument("--baseline-crops", type=int, default=3, help="Crops timed for the CPU baseline (default 3).")
    parser.add_argument("--cpu-batch", type=int, default=None,
                        help="Crops per batch on the CPU (default: the encoder's rule, from the available RAM).")
    parser.add_argument("--no-cpu", action="store_true", help="Skip the CPU (when a GPU is measured).")
    args = parser.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if not isinstance(BACKBONES.get(n), TimmBackbone)]
    if unknown or args.threads < 1 or args.batches < 1 or args.baseline_crops < 1 or (args.cpu_batch or 1) < 1:
        parser.error(f"--models must name timm backbones ({', '.join(n for n, b in BACKBONES.items() if isinstance(b, TimmBackbone))}), "
                     f"got {unknown}; --threads, --batches and --baseline-crops must be >= 1")
    report: dict = {"torch": torch.__version__, "cpu_model": _cpu_model(),
                    "cpu_threads": args.threads, "batches_timed": args.batches, "load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="slidelabel-foundation-bench-") as tmp:
        folders = {name: save_random_weights(BACKBONES[name], Path(tmp) / name) for name in names}
        if not args.no_cpu:
            report["cpu"] = run_device("cpu", folders, threads=args.threads, batches=args.batches,
                                       baseline_crops=args.baseline_crops, batch_crops=args.cpu_batch)
        if torch.cuda.is_available():
            report["cuda"] = {"device": torch.cuda.get_device_name(0), **run_device(
                "cuda", folders, threads=args.threads, batches=max(args.batches, 3), baseline_crops=64)}
            if "uni" in names:
                report["cuda"]["target_vit_l16_crops_per_s"] = TARGET_CROPS_PER_S
                report["cuda"]["target_met"] = report["cuda"]["uni"]["default"]["crops_per_s"] >= TARGET_CROPS_PER_S
        else:
            report["cuda"] = {"skipped": "torch sees no CUDA GPU on this machine"}
    report["load_average_after"] = os.getloadavg()
    json.dump(report, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
