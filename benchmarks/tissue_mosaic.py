"""A multi-class development benchmark: whole slides whose tissue is a mosaic of organs.

A *proxy for tissue typing*, not pathologists' labels: each slide is a pyramidal TIFF at 40x
(0.2527 um/px) whose tissue, a noisy blob on near-white glass (20-35% of the area), is cut into
irregular regions (a Voronoi partition with boundaries warped by smooth noise), each filled with
one organ's H&E from the MoNuSeg training images; the mask next to it gives each pixel's class
(0 glass, 1..K the organs in ``--organs`` order). Telling the regions apart asks for what tissue
typing asks for, texture and architecture over tens to hundreds of micrometres, but the classes
are organs of origin, and one region's texture is one 1000 x 1000 px image repeated.

- Every source image is first stain-normalised (Reinhard, to :data:`slidelabel.pipelines.stain.
  REFERENCE`), so that colour alone does not give its organ away.
- Slide i fills organ k's regions from the i-th image of organ k only (images sorted by name),
  so no two slides share a source image and any split of slides into training and test draws on
  different images. With the default four organs of six images each, at most six slides.
- A region tiles its image with crops of 500-1000 px, each mirrored and turned by a random
  multiple of 90 degrees, so the texture has no visible period (block edges are visible as seams
  in the texture, in every class alike); nothing is rescaled.
- Everything is drawn from ``--seed`` and the slide's index: the same options write the same
  pixels.

Memory stays bounded for any ``--size``: level 0 and the mask are built 1024 px squares at a time
into memory-mapped scratch files next to the output, the pyramid level by level from them, and the
TIFFs are written tile by tile (256 px; RGB JPEG quality 90, levels halved until one is under 512
px, stored as pages as OpenSlide's generic-TIFF reader expects; the mask deflated, with levels of
every second pixel).

Make the data, then run the simulator on it (whole-slide input to ``slidelabel simulate``)::

    .venv/bin/python benchmarks/tissue_mosaic.py make --out mosaic/ [--slides 6] [--size 8192] \
        [--organs breast kidney lung prostate] [--seed 0]
    .venv/bin/python benchmarks/tissue_mosaic.py run --data mosaic/ --out mosaic-sim/ [simulate options]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from scipy import ndimage as ndi

from slidelabel.errors import ParameterError, SlidelabelError
from slidelabel.pipelines.stain import REFERENCE, reinhard, reinhard_statistics
from slidelabel.store.atomic import atomic_path, write_json_atomic

MONUSEG = Path(__file__).resolve().parents[2] / "shared" / "data" / "monuseg-train"
DEFAULT_ORGANS = ("breast", "kidney", "lung", "prostate")
#: Micrometres per level-0 pixel: MoNuSeg's 40x.
MPP = 0.2527
#: Side of the squares level 0 is built in, and the unit of ``--size``.
CHUNK = 1024
TILE = 256
#: Glass colour and the standard deviation of its per-pixel noise, in 8-bit levels.
GLASS_RGB = (240.0, 240.0, 238.0)
GLASS_NOISE = 2.0
#: Range of the sides of the crops that fill a region, in level-0 px.
CROP_PX = (500, 1000)
REGIONS_PER_ORGAN = 3
#: Range of the tissue's share of the slide (the rest is glass).
TISSUE_SHARE = (0.65, 0.80)
#: Side of the canvas the layout is drawn on; level-0 pixels interpolate its fields.
CANVAS = 512
#: Least share of the tissue each organ gets on every slide, as a fraction of an even share.
LEAST_ORGAN_SHARE = 0.4
_JPEG = {"compression": "jpeg", "compressionargs": {"level": 90}, "photometric": "rgb"}
_DEFLATE = {"compression": "zlib", "predictor": True, "photometric": "minisblack"}


@dataclass(frozen=True)
class Layout:
    """Where a slide's tissue and regions lie, as fields on a ``CANVAS`` x ``CANVAS`` canvas
    spanning the slide: tissue where ``tissue_G_G > 0``; a pixel belongs to the region of the seed
    nearest to it once moved by ``warp_2_G_G`` (canvas px); ``organ_of_region_R`` is 0-based."""

    tissue_G_G: np.ndarray
    warp_2_G_G: np.ndarray
    seeds_R_2: np.ndarray
    organ_of_region_R: np.ndarray


@dataclass(frozen=True)
class Texture:
    """How one organ's image fills the plane: blocks between ``row_edges`` and ``col_edges``
    (level-0 px), block ``(r, c)`` being the crop at ``origins[r, c]`` (row, col in the image),
    turned ``turns[r, c]`` times by 90 degrees and mirrored where ``mirrored[r, c]``."""

    image_H_W_3: np.ndarray
    row_edges: np.ndarray
    col_edges: np.ndarray
    origins: np.ndarray
    turns: np.ndarray
    mirrored: np.ndarray


def source_images(monuseg: Path, organs: tuple[str, ...], slides: int) -> list[dict[str, str]]:
    """For each slide, organ -> the MoNuSeg image name it uses (slide i: each organ's i-th image)."""
    if not (monuseg / "organs.csv").is_file():
        raise ParameterError(f"{monuseg} has no organs.csv; pass --monuseg with the MoNuSeg training folder")
    by_organ: dict[str, list[str]] = {}
    with open(monuseg / "organs.csv", newline="") as table:
        for row in csv.DictReader(table):
            by_organ.setdefault(row["organ"], []).append(row["image"])
    for organ in organs:
        if len(by_organ.get(organ, ())) < slides:
            raise ParameterError(f"organ {organ!r} has {len(by_organ.get(organ, ()))} images in {monuseg}/organs.csv, "
                                 f"fewer than --slides {slides}; known: "
                                 + ", ".join(f"{o} ({len(n)})" for o, n in sorted(by_organ.items())))
    return [{organ: sorted(by_organ[organ])[i] for organ in organs} for i in range(slides)]


def normalised_image(path: Path) -> np.ndarray:
    """The image at ``path`` as uint8 RGB, Reinhard-normalised to the reference stain."""
    rgb = np.asarray(Image.open(path).convert("RGB"))
    return reinhard(rgb, reinhard_statistics(rgb), REFERENCE)


def _smooth_noise(rng: np.random.Generator, sigma: float) -> np.ndarray:
    noise = ndi.gaussian_filter(rng.standard_normal((CANVAS, CANVAS)), sigma, mode="wrap")
    return noise / noise.std()


def _regions(layout_fields: tuple[np.ndarray, np.ndarray], seeds_R_2: np.ndarray, rows: np.ndarray,
             cols: np.ndarray) -> np.ndarray:
    """Index of the region of each canvas point ``(rows, cols)``, given the warp there."""
    d_rows, d_cols = layout_fields
    best, region = np.full(rows.shape, np.inf, np.float32), np.zeros(rows.shape, np.uint8)
    for index, (seed_row, seed_col) in enumerate(seeds_R_2):
        distance = (rows + d_rows - seed_row) ** 2 + (cols + d_cols - seed_col) ** 2
        closer = distance < best
        best[closer], region[closer] = distance[closer], index
    return region


def make_layout(rng: np.random.Generator, organs: int) -> Layout:
    """A noisy blob of tissue cut into ``REGIONS_PER_ORGAN`` regions per organ, every organ with at
    least ``LEAST_ORGAN_SHARE`` of an even share of the tissue."""
    rows, cols = np.mgrid[:CANVAS, :CANVAS].astype(np.float32)
    # A rounded square (a 3-norm "circle"), since 65-80% of a square slide leaves no room for a
    # disc, with a wobbly outline, kept off the slide's edges by a penalty that grows towards them.
    centre = CANVAS / 2 + rng.uniform(-0.03, 0.03, 2) * CANVAS
    radii = rng.uniform(0.38, 0.46, 2) * CANVAS
    field = -(np.abs((rows - centre[0]) / radii[0]) ** 3 + np.abs((cols - centre[1]) / radii[1]) ** 3) ** (1 / 3)
    field += 0.2 * _smooth_noise(rng, CANVAS / 16) + 0.06 * _smooth_noise(rng, CANVAS / 48)
    edge = np.minimum(np.minimum(rows, cols), np.minimum(CANVAS - 1 - rows, CANVAS - 1 - cols)) / CANVAS
    field -= 40 * np.maximum(0.06 - edge, 0) ** 2 / 0.06
    tissue_G_G = (field - np.quantile(field, 1 - rng.uniform(*TISSUE_SHARE))).astype(np.float32)
    warp_2_G_G = (CANVAS / 20 * np.stack([_smooth_noise(rng, CANVAS / 24) for _ in range(2)])).astype(np.float32)
    inside_P = np.flatnonzero(tissue_G_G > 0)
    for _ in range(100):
        seeds = [np.divmod(rng.choice(inside_P), CANVAS)]
        while len(seeds) < REGIONS_PER_ORGAN * organs:  # best of 20 candidates: spread-out seeds
            candidates = np.stack(np.divmod(rng.choice(inside_P, 20), CANVAS), axis=1)
            gaps = np.min(np.linalg.norm(candidates[:, None] - np.asarray(seeds)[None], axis=2), axis=1)
            seeds.append(candidates[np.argmax(gaps)])
        layout = Layout(tissue_G_G, warp_2_G_G, np.asarray(seeds, np.float32),
                        rng.permutation(np.repeat(np.arange(organs, dtype=np.uint8), REGIONS_PER_ORGAN)))
        organ_G_G = layout.organ_of_region_R[_regions(tuple(warp_2_G_G), layout.seeds_R_2, rows, cols)]
        shares = np.bincount(organ_G_G[tissue_G_G > 0], minlength=organs) / inside_P.size
        if shares.min() >= LEAST_ORGAN_SHARE / organs:
            return layout
    raise RuntimeError("no layout gave every organ its share in 100 tries")  # pragma: no cover


def labels_window(layout: Layout, size: int, top: int, left: int, height: int, width: int) -> np.ndarray:
    """uint8 classes ``(height, width)`` of a level-0 window: 0 glass, 1 + organ index in tissue."""
    scale = CANVAS / size  # canvas px per level-0 px; pixel centres map to canvas coordinates
    rows = np.broadcast_to(((np.arange(top, top + height) + 0.5) * scale - 0.5)[:, None], (height, width))
    cols = np.broadcast_to(((np.arange(left, left + width) + 0.5) * scale - 0.5)[None, :], (height, width))
    points = np.stack([rows, cols]).astype(np.float32)

    def at(field: np.ndarray) -> np.ndarray:
        return ndi.map_coordinates(field, points, order=1, mode="nearest")

    regions = _regions((at(layout.warp_2_G_G[0]), at(layout.warp_2_G_G[1])), layout.seeds_R_2, points[0], points[1])
    return np.where(at(layout.tissue_G_G) > 0, layout.organ_of_region_R[regions] + 1, 0).astype(np.uint8)


def _edges(rng: np.random.Generator, size: int, largest: int) -> np.ndarray:
    sides = rng.integers(min(CROP_PX[0], largest), min(CROP_PX[1], largest) + 1, size // CROP_PX[0] + 1)
    edges = np.concatenate([[0], np.cumsum(sides)])
    return edges[: np.searchsorted(edges, size) + 1]


def make_texture(rng: np.random.Generator, image_H_W_3: np.ndarray, size: int) -> Texture:
    """Random crops of ``image_H_W_3`` (mirrored, turned) tiling a ``size`` x ``size`` plane."""
    largest = min(image_H_W_3.shape[:2])
    row_edges, col_edges = _edges(rng, size, largest), _edges(rng, size, largest)
    shape = (row_edges.size - 1, col_edges.size - 1)
    turns, mirrored = rng.integers(0, 4, shape), rng.integers(0, 2, shape).astype(bool)
    heights, widths = np.diff(row_edges)[:, None], np.diff(col_edges)[None, :]
    crop_rows = np.where(turns % 2, widths, heights)  # a quarter turn swaps the crop's sides
    crop_cols = np.where(turns % 2, heights, widths)
    origins = np.stack([rng.integers(0, image_H_W_3.shape[0] - crop_rows + 1),
                        rng.integers(0, image_H_W_3.shape[1] - crop_cols + 1)], axis=-1)
    return Texture(image_H_W_3, row_edges, col_edges, origins, turns, mirrored)


def texture_window(texture: Texture, top: int, left: int, height: int, width: int) -> np.ndarray:
    """uint8 RGB ``(height, width, 3)`` of the texture's level-0 window."""
    out = np.empty((height, width, 3), np.uint8)
    first_row, first_col = (np.searchsorted(edges, start, "right") - 1
                            for edges, start in ((texture.row_edges, top), (texture.col_edges, left)))
    for r in range(first_row, np.searchsorted(texture.row_edges, top + height)):
        for c in range(first_col, np.searchsorted(texture.col_edges, left + width)):
            y0, y1 = texture.row_edges[r], texture.row_edges[r + 1]
            x0, x1 = texture.col_edges[c], texture.col_edges[c + 1]
            size = (x1 - x0, y1 - y0) if texture.turns[r, c] % 2 else (y1 - y0, x1 - x0)
            o_row, o_col = texture.origins[r, c]
            block = np.rot90(texture.image_H_W_3[o_row:o_row + size[0], o_col:o_col + size[1]], texture.turns[r, c])
            block = block[:, ::-1] if texture.mirrored[r, c] else block
            a_y, a_x, b_y, b_x = max(y0, top), max(x0, left), min(y1, top + height), min(x1, left + width)
            out[a_y - top:b_y - top, a_x - left:b_x - left] = block[a_y - y0:b_y - y0, a_x - x0:b_x - x0]
    return out


def render(rgb: np.ndarray, labels: np.ndarray, layout: Layout, textures: list[Texture], seed: tuple[int, ...]) -> None:
    """Fill level 0 ``rgb`` ``(S, S, 3)`` and ``labels`` ``(S, S)`` (memory maps) square by square."""
    size = labels.shape[0]
    for top in range(0, size, CHUNK):
        for left in range(0, size, CHUNK):
            classes = labels_window(layout, size, top, left, CHUNK, CHUNK)
            glass_rng = np.random.default_rng((*seed, top, left))
            pixels = np.clip(np.add(GLASS_RGB, glass_rng.normal(0, GLASS_NOISE, (CHUNK, CHUNK, 3))), 0, 255)
            pixels = pixels.round().astype(np.uint8)
            for value in np.unique(classes[classes > 0]):
                inside = classes == value
                pixels[inside] = texture_window(textures[value - 1], top, left, CHUNK, CHUNK)[inside]
            rgb[top:top + CHUNK, left:left + CHUNK] = pixels
            labels[top:top + CHUNK, left:left + CHUNK] = classes


def _halved(level: np.ndarray, scratch: Path) -> np.ndarray:
    """The next pyramid level: means of 2 x 2 pixels, in a memory map, a band of rows at a time."""
    half = np.lib.format.open_memmap(scratch, "w+", np.uint8, (level.shape[0] // 2, level.shape[1] // 2, 3))
    for top in range(0, half.shape[0], CHUNK // 2):
        band = level[2 * top:2 * (top + CHUNK // 2)].astype(np.float32)
        band = band.reshape(band.shape[0] // 2, 2, half.shape[1], 2, 3).mean(axis=(1, 3))
        half[top:top + band.shape[0]] = np.round(band).astype(np.uint8)
    return half


def _tiles(level: np.ndarray) -> Iterator[np.ndarray]:
    for top in range(0, level.shape[0], TILE):
        for left in range(0, level.shape[1], TILE):
            yield np.ascontiguousarray(level[top:top + TILE, left:left + TILE])


def write_pyramid(path: Path, levels: list[np.ndarray], options: dict) -> None:
    """A tiled TIFF of ``levels`` (finest first, each half the one before), one page each, with
    the pixel size of each level as resolution tags (pixels per cm), atomically."""
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True) as tiff:
        for index, level in enumerate(levels):
            tiff.write(_tiles(level), shape=level.shape, dtype=np.uint8, tile=(TILE, TILE),
                       subfiletype=1 if index else 0, resolution=(1e4 / (MPP * 2**index),) * 2,
                       resolutionunit="CENTIMETER", metadata=None, **options)


def make_slide(out: Path, stem: str, images: list[np.ndarray], size: int, seed: tuple[int, ...]) -> np.ndarray:
    """Write ``slides/<stem>.tiff`` and ``masks/<stem>.tiff`` of ``size`` x ``size`` px, filling
    organ k's regions with ``images[k]``; the pixel count of each class."""
    rng = np.random.default_rng(seed)
    layout = make_layout(rng, len(images))
    textures = [make_texture(rng, image, size) for image in images]
    with tempfile.TemporaryDirectory(dir=out, prefix=".scratch-") as scratch:
        rgb = np.lib.format.open_memmap(Path(scratch) / "rgb.npy", "w+", np.uint8, (size, size, 3))
        labels = np.lib.format.open_memmap(Path(scratch) / "labels.npy", "w+", np.uint8, (size, size))
        render(rgb, labels, layout, textures, seed)
        levels = [rgb]
        while max(levels[-1].shape[:2]) >= 512:
            levels.append(_halved(levels[-1], Path(scratch) / f"level{len(levels)}.npy"))
        write_pyramid(out / "slides" / f"{stem}.tiff", levels, _JPEG)
        write_pyramid(out / "masks" / f"{stem}.tiff", [labels[::2**k, ::2**k] for k in range(len(levels))], _DEFLATE)
        counts = np.zeros(len(images) + 1, np.int64)
        for top in range(0, size, CHUNK):
            counts += np.bincount(labels[top:top + CHUNK].ravel(), minlength=counts.size)
        del rgb, labels, levels  # the memory maps must close before their folder goes
    return counts


def make(out: Path, *, slides: int = 6, size: int = 8192, organs: tuple[str, ...] = DEFAULT_ORGANS, seed: int = 0,
         monuseg: Path = MONUSEG) -> dict:
    """Write the benchmark into ``out`` (``slides/``, ``masks/``, ``classes.json``,
    ``sources.json``); what was written, with each slide's class fractions."""
    if slides < 1 or size < CHUNK or size % CHUNK or seed < 0:
        raise ParameterError(f"--slides must be >= 1, --size a multiple of {CHUNK} and --seed >= 0, got {slides}, "
                             f"{size} and {seed}")
    if len(set(organs)) != len(organs) or not organs:
        raise ParameterError(f"--organs must name distinct organs, got {organs}")
    started = time.perf_counter()
    sources = source_images(monuseg, organs, slides)
    classes = {"0": "glass", **{str(k + 1): organ for k, organ in enumerate(organs)}}
    for folder in ("slides", "masks"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    written = []
    for index, names in enumerate(sources):
        stem = f"mosaic-{index:02d}"
        images = [normalised_image(monuseg / "images" / f"{names[organ]}.png") for organ in organs]
        counts = make_slide(out, stem, images, size, (seed, index))
        fractions = {classes[str(value)]: round(float(count) / size**2, 4) for value, count in enumerate(counts)}
        written.append({"slide": str(out / "slides" / f"{stem}.tiff"), "mask": str(out / "masks" / f"{stem}.tiff"),
                        "sources": names, "class_fractions": fractions})
    write_json_atomic(out / "classes.json", classes)
    write_json_atomic(out / "sources.json", {
        "stain_reference": dataclasses.asdict(REFERENCE), "mpp": MPP,
        "slides": {Path(entry["slide"]).stem: entry["sources"] for entry in written}})
    return {"out": str(out), "size": size, "mpp": MPP, "seed": seed, "classes": classes, "slides": written,
            "files": [str(out / "classes.json"), str(out / "sources.json")]
                     + [path for entry in written for path in (entry["slide"], entry["mask"])],
            "seconds": round(time.perf_counter() - started, 1)}


def run(data: Path, out: Path, extra: list[str]) -> int:
    """``slidelabel simulate DATA/slides DATA/masks --out OUT`` with ``extra`` options; its exit code."""
    command = [sys.executable, "-m", "slidelabel.cli.main", "simulate", str(data / "slides"), str(data / "masks"),
               "--out", str(out), *extra]
    return subprocess.run(command, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    maker = commands.add_parser("make", help="write the slides, masks, classes.json and sources.json")
    maker.add_argument("--out", type=Path, required=True)
    maker.add_argument("--slides", type=int, default=6)
    maker.add_argument("--size", type=int, default=8192, help=f"level-0 side in px, a multiple of {CHUNK}")
    maker.add_argument("--organs", nargs="+", default=list(DEFAULT_ORGANS))
    maker.add_argument("--seed", type=int, default=0)
    maker.add_argument("--monuseg", type=Path, default=MONUSEG, help="MoNuSeg training folder (images/, organs.csv)")
    runner = commands.add_parser("run", help="run slidelabel simulate on made data; other options go to simulate")
    runner.add_argument("--data", type=Path, required=True)
    runner.add_argument("--out", type=Path, required=True)
    args, extra = parser.parse_known_args(argv)
    if args.command == "run":
        return run(args.data, args.out, extra)
    if extra:
        parser.error(f"unrecognised arguments: {' '.join(extra)}")
    try:
        print(json.dumps(make(args.out, slides=args.slides, size=args.size, organs=tuple(args.organs),
                              seed=args.seed, monuseg=args.monuseg), indent=2))
    except SlidelabelError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
