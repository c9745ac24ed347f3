"""Every registered Segment Anything architecture (SAM, SAM-HQ, SAM 2), each a tiny randomly
initialised model saved as the published ones are, loaded through slidelabel's loader on a real
MoNuSeg tissue crop: the folder picks the architecture, a hover runs the prompt encoder and mask
decoder only and gives what the whole model gives, and the masks' input frame maps back onto the
image as transformers' own post-processing maps it."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest

from slidelabel.errors import ParameterError
from slidelabel.pipelines.sam import ImageEmbedding, SamPredictor, load_sam, mask_outline, sam_folder
from slidelabel.pipelines.sam_models import SAM_ARCHITECTURES

TINY = runpy.run_path(str(Path(__file__).parents[1] / "web" / "tiny_sam.py"))
#: The crop of the first MoNuSeg image (rows, cols): not square, so that SAM's padding and SAM 2's
#: stretching give different input frames.
CROP = (slice(100, 700), slice(50, 850))
#: Points (image px of the crop) where the tests hover.
POINTS = ((401.3, 250.7), (30.2, 575.9), (790.5, 10.5))


@pytest.fixture(scope="module", params=sorted(TINY["BUILDERS"]))
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """(model_type, folder) of a tiny model of each architecture."""
    return request.param, TINY["BUILDERS"][request.param](tmp_path_factory.mktemp("sam") / request.param)


@pytest.fixture(scope="module")
def tissue(monuseg_pair) -> np.ndarray:
    rgb = monuseg_pair(0)[0][CROP]
    assert rgb.shape == (600, 800, 3) and rgb.std() > 10  # tissue, not a blank
    return rgb


def _order(name: str, masks_3_h_w: np.ndarray) -> np.ndarray:
    """The order slidelabel gives the model's three masks: SAM-HQ's by area (its decoder sorts
    them by predicted IoU), the others' as the model gives them."""
    if name != "sam_hq":
        return np.arange(3)
    return np.argsort((masks_3_h_w > 0).reshape(3, -1).sum(1), kind="stable")


def test_each_architecture_is_a_transformers_model_type() -> None:
    import transformers

    assert SAM_ARCHITECTURES.names() == ["sam", "sam_hq", "sam2"] and SAM_ARCHITECTURES.default() == "sam"
    for name, architecture in SAM_ARCHITECTURES.items():
        assert getattr(transformers, architecture.model_class).config_class.model_type == name
        assert architecture.repos and all("/" in repo for repo in architecture.repos)


def test_the_folder_picks_the_architecture(tiny: tuple[str, Path], tmp_path: Path) -> None:
    name, folder = tiny
    predictor = load_sam(sam_folder(folder), "cpu")
    assert predictor.model_type == name and type(predictor.model).__name__ == SAM_ARCHITECTURES[name].model_class
    assert predictor.input_px == TINY["INPUT_PX"]
    # A model_type slidelabel does not know is refused, naming the ones it knows.
    import shutil

    shutil.copytree(folder, tmp_path / "other")
    config = (tmp_path / "other" / "config.json").read_text().replace(f'"model_type": "{name}"', '"model_type": "owl"')
    (tmp_path / "other" / "config.json").write_text(config)
    with pytest.raises(ParameterError, match="'owl'; registered: sam, sam_hq, sam2"):
        sam_folder(tmp_path / "other")


def test_a_sam_hq_folder_without_its_processor_says_what_to_download(tmp_path: Path) -> None:
    folder = TINY["save_tiny_sam_hq"](tmp_path / "hq")
    (folder / "processor_config.json").unlink()
    with pytest.raises(ParameterError, match=f"hf download syscv-community/sam-hq-vit-base --local-dir {folder}"):
        sam_folder(folder)


def test_a_hover_runs_the_decoder_only_and_gives_what_the_model_gives(tiny: tuple[str, Path],
                                                                         tissue: np.ndarray) -> None:
    import torch

    name, folder = tiny
    predictor = load_sam(sam_folder(folder), "cpu")
    encoder_passes = []
    hook = predictor.model.vision_encoder.register_forward_hook(lambda *_: encoder_passes.append(1))
    try:
        embedding = predictor.embed(tissue)
        assert len(encoder_passes) == 1
        hovers = [predictor.masks(embedding, x, y) for x, y in POINTS]
        assert len(encoder_passes) == 1  # the hovers reused the embedding
    finally:
        hook.remove()
    side = TINY["MASK_PX"]
    for masks in hovers:
        assert masks.logits_3_h_w.shape == (3, side, side) and masks.scores_3.shape == (3,)
        assert masks.cell_px == TINY["INPUT_PX"] / side and np.isfinite(masks.logits_3_h_w).all()
    assert not np.array_equal(hovers[0].logits_3_h_w, hovers[1].logits_3_h_w)
    # The whole model on the pixels, as its forward runs it, for the same point (the prompt
    # encoders take pixel indices: continuous input px less half a pixel).
    pixel_values = predictor.make_input(tissue).pixel_values_1_3_S_S
    for (x, y), masks in zip(POINTS, hovers):
        x_in, y_in = embedding.to_input(x, y)
        with torch.inference_mode():
            whole = predictor.model(pixel_values=pixel_values, multimask_output=True,
                                    input_points=torch.tensor([[[[x_in - 0.5, y_in - 0.5]]]]))
        expected_3_h_w, iou_3 = whole.pred_masks[0, 0].numpy(), whole.iou_scores[0, 0].numpy()
        order = _order(name, expected_3_h_w)
        np.testing.assert_allclose(masks.logits_3_h_w, expected_3_h_w[order], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(masks.scores_3, iou_3[order], rtol=1e-4, atol=1e-5)


def _reference_on_image(predictor: SamPredictor, logits_1_3_h_w: np.ndarray, embedding: ImageEmbedding) -> np.ndarray:
    """transformers' post-processing of low-resolution masks to the image: ``(3, H, W)`` bool.
    SAM 2's is ``Sam2ImageProcessor.post_process_masks`` (a bilinear resize of the whole square),
    written out here as that class needs torchvision to be built."""
    import torch

    masks = torch.from_numpy(logits_1_3_h_w)
    if predictor.model_type == "sam2":
        resized = torch.nn.functional.interpolate(masks, (embedding.height, embedding.width), mode="bilinear",
                                                  align_corners=False)
        return (resized > 0)[0].numpy()
    processor = predictor.make_input.processor.image_processor
    square = {"height": predictor.input_px, "width": predictor.input_px}
    return processor.post_process_masks(masks[None], [(embedding.height, embedding.width)], [embedding.input_hw],
                                        pad_size=square)[0][0].numpy()


def test_the_input_frame_maps_back_onto_the_image(tiny: tuple[str, Path], tissue: np.ndarray) -> None:
    name, folder = tiny
    predictor = load_sam(sam_folder(folder), "cpu")
    embedding = predictor.embed(tissue)
    side = predictor.input_px
    # SAM and SAM-HQ keep the aspect (long side to the square's), SAM 2 stretches to the square.
    assert embedding.input_hw == ((side, side) if name == "sam2" else (side * 600 // 800, side))
    points_V_2 = np.array(POINTS)
    np.testing.assert_allclose(embedding.to_image(np.array([embedding.to_input(x, y) for x, y in POINTS])), points_V_2)
    # Smooth masks over the input square, read at each image pixel's centre through the frames,
    # agree with transformers' post-processing of the same masks (but along their boundaries).
    cells = TINY["MASK_PX"]
    v, u = np.mgrid[0:cells, 0:cells] / cells
    logits_1_3_h_w = np.stack([np.sin(7 * u + 3 * v) + 0.3, np.cos(5 * v - 2 * u), u * v - 0.2])[None]
    logits_1_3_h_w = logits_1_3_h_w.astype(np.float32)
    reference_3_H_W = _reference_on_image(predictor, logits_1_3_h_w, embedding)
    rows, cols = np.mgrid[0:embedding.height, 0:embedding.width] + 0.5
    x_in, y_in = embedding.to_input(cols, rows)
    cell_px = side / cells
    ours_3_H_W = logits_1_3_h_w[0][:, (y_in // cell_px).astype(int), (x_in // cell_px).astype(int)] > 0
    agree = (ours_3_H_W == reference_3_H_W).mean(axis=(1, 2))
    assert (agree > 0.97).all(), agree
    assert 0.1 < reference_3_H_W.mean() < 0.9  # the masks have boundaries inside the image
    # The model's outlines, mapped to image px, lie on the image (but for the part of a mask
    # cell past its edge).
    cell_image_px = cell_px * max(embedding.width / embedding.input_hw[1], embedding.height / embedding.input_hw[0])
    for x, y in POINTS:
        masks = predictor.masks(embedding, x, y)
        for logits_h_w in masks.logits_3_h_w:
            ring_V_2 = embedding.to_image(mask_outline(logits_h_w, *embedding.to_input(x, y), cell_px=masks.cell_px,
                                                       valid_hw=embedding.input_hw))
            assert (ring_V_2 >= -cell_image_px).all()
            assert (ring_V_2 <= np.array([embedding.width, embedding.height]) + cell_image_px).all()


def test_sam2_weights_without_a_processor_config_take_sam2s_defaults(tmp_path: Path) -> None:
    """As ``save_pretrained`` of the model alone leaves them: config.json and the weights."""
    folder = TINY["save_tiny_sam2"](tmp_path / "sam2")
    (folder / "preprocessor_config.json").unlink()
    predictor = SamPredictor(sam_folder(folder), device="cpu")
    assert predictor.input_px == TINY["INPUT_PX"]  # the prompt encoder's image size
    made = predictor.make_input(np.full((30, 50, 3), 255, np.uint8))
    assert tuple(made.pixel_values_1_3_S_S.shape) == (1, 3, 256, 256)
    # White, normalised with ImageNet's mean and std.
    np.testing.assert_allclose(made.pixel_values_1_3_S_S[0, :, 0, 0].numpy(),
                               (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]), rtol=1e-5)


def test_sam2_input_is_transformers_own() -> None:
    """Where torchvision is installed, SAM 2's input is what ``Sam2ImageProcessor`` makes."""
    pytest.importorskip("torchvision")
    from transformers import Sam2ImageProcessor

    from slidelabel.pipelines.sam_models import StretchedInput

    rgb = np.random.default_rng(0).integers(0, 256, (300, 500, 3), dtype=np.uint8)  # upsampled, not square
    ours = StretchedInput(1024, 1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))(rgb).pixel_values_1_3_S_S
    theirs = Sam2ImageProcessor()(images=rgb, return_tensors="pt")["pixel_values"]
    assert ours.shape == theirs.shape and float((ours - theirs).abs().max()) < 1e-5


@pytest.fixture(scope="module")
def cmu_superpixels(tmp_path_factory: pytest.TempPathFactory, cmu_slide: Path) -> Path:
    """Superpixels of the CMU sample at 10x (working downsample 2), 16 um."""
    from slidelabel.services.superpixels import SuperpixelOptions, SuperpixelSize, compute_slide_superpixels

    folder = tmp_path_factory.mktemp("smart") / "cmu"
    compute_slide_superpixels(cmu_slide, folder, SuperpixelOptions(size=SuperpixelSize.parse("16um")))
    return folder


@pytest.mark.parametrize("model_type", ["sam_hq", "sam2"])
def test_the_smart_tool_suggests_with_each_new_architecture(tmp_path: Path, cmu_slide: Path, cmu_superpixels: Path,
                                                             model_type: str) -> None:
    import shutil

    from slidelabel.services import smart
    from slidelabel.settings import Settings
    from slidelabel.store.layout import ProjectFiles
    from slidelabel.store.models import Slide

    shutil.copytree(cmu_superpixels, ProjectFiles(tmp_path, 1).superpixels(1))
    slide = Slide(id=1, project_id=1, name=cmu_slide.name, path=str(cmu_slide), width=2220, height=2967)
    settings = Settings(data_dir=tmp_path, sam_model=TINY["BUILDERS"][model_type](tmp_path / model_type))
    region = (301.0, 399.0, 1899.0, 2603.0)  # taller than wide: SAM 2 stretches it, SAM-HQ pads it
    found = smart.suggest(None, settings, None, slide, x_level0=1000.0, y_level0=1500.0, region_level0=region,
                          downsample=4.0)
    assert found.basis == "sam" and len(found.scales) == 3
    assert smart.embed_region(settings, slide, region)[1]  # the suggestion embedded it; now cached
    cell_level0 = 4.0 * (2603 - 399) / TINY["INPUT_PX"]  # a mask cell, in level-0 px
    for suggestion in found.scales:
        outline = suggestion.outline_level0
        assert len(outline) >= 3 and suggestion.score is not None
        assert (outline >= np.array(region[:2]) - cell_level0).all()
        assert (outline <= np.array(region[2:]) + cell_level0).all()
        assert np.all(np.diff(suggestion.superpixels) > 0)
    assert sum(len(s.superpixels) for s in found.scales) > 0
