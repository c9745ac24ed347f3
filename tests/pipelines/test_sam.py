"""Segment Anything from local weights, on a tiny randomly initialised SamModel saved as the
published ones are: where the loader looks (and what it says when nothing is there), the shapes
of embeddings and masks on a real slide region, and mask outlines."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest

from slidelabel.errors import ParameterError
from slidelabel.pipelines.pinned_files import pin_file
from slidelabel.pipelines.sam import SAM_ENV, load_sam, mask_outline, sam_folder
from slidelabel.services.smart import read_region

TINY = runpy.run_path(str(Path(__file__).parents[1] / "web" / "tiny_sam.py"))


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return TINY["save_tiny_sam"](tmp_path_factory.mktemp("sam") / "tiny")


@pytest.fixture()
def no_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Model folders and a Hugging Face cache that are all empty; returns their root."""
    import huggingface_hub.constants

    monkeypatch.setenv("SLIDELABEL_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("SLIDELABEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path


def test_missing_weights_say_what_to_put_where(no_weights: Path) -> None:
    with pytest.raises(ParameterError) as error:
        sam_folder()
    message = str(error.value)
    for part in ("config.json and model.safetensors or pytorch_model.bin", str(no_weights / "models" / "sam"),
                 str(no_weights / "cache" / "models" / "sam"), "Hugging Face cache of facebook/sam-vit-base",
                 "hf download facebook/sam-vit-base --local-dir", SAM_ENV):
        assert part in message, part
    with pytest.raises(ParameterError, match="elsewhere"):
        sam_folder(no_weights / "elsewhere")


def test_weights_are_found_in_the_models_folder_and_the_hf_cache(no_weights: Path, tiny_sam: Path) -> None:
    import shutil

    shutil.copytree(tiny_sam, no_weights / "models" / "sam")
    assert sam_folder() == no_weights / "models" / "sam"
    shutil.rmtree(no_weights / "models" / "sam")
    repo = no_weights / "hf" / "models--facebook--sam-vit-base"
    shutil.copytree(tiny_sam, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    assert sam_folder() == repo / "snapshots" / "0123abcd"


def test_a_folder_without_the_processor_is_refused(tmp_path: Path, tiny_sam: Path) -> None:
    import shutil

    shutil.copytree(tiny_sam, tmp_path / "sam")
    for name in ("processor_config.json", "preprocessor_config.json"):
        (tmp_path / "sam" / name).unlink(missing_ok=True)
    with pytest.raises(ParameterError, match="processor"):
        sam_folder(tmp_path / "sam")


def test_embedding_and_three_masks_of_a_slide_region(tiny_sam: Path, cmu_slide: Path) -> None:
    predictor = load_sam(sam_folder(tiny_sam), "cpu")
    assert load_sam(sam_folder(tiny_sam), "cpu") is predictor  # loaded once
    rgb, downsample = read_region(pin_file(cmu_slide, links=True), (400, 600, 1400, 1350), predictor.input_px)
    assert rgb.shape == (192, 256, 3) and rgb.dtype == np.uint8 and downsample == pytest.approx(1000 / 256)
    assert rgb.std() > 10  # tissue, not a blank
    embedding = predictor.embed(rgb)
    assert tuple(embedding.embeddings.shape) == (1, 32, 16, 16) and embedding.input_hw == (192, 256)
    masks = predictor.masks(embedding, 120.0, 80.0)
    assert masks.logits_3_h_w.shape == (3, 64, 64) and masks.scores_3.shape == (3,) and masks.cell_px == 4.0
    assert np.isfinite(masks.logits_3_h_w).all()
    # The decoder alone on the cached embedding gives what the whole model gives for the point.
    import torch

    with torch.inference_mode():
        whole = predictor.model(image_embeddings=embedding.embeddings, multimask_output=True,
                                input_points=torch.tensor([[[[120.0 - 0.5, 80.0 - 0.5]]]]))
    np.testing.assert_allclose(masks.logits_3_h_w, whole.pred_masks[0, 0].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(masks.scores_3, whole.iou_scores[0, 0].numpy(), rtol=1e-5, atol=1e-6)
    # Another point, other masks.
    assert not np.array_equal(predictor.masks(embedding, 20.0, 150.0).logits_3_h_w, masks.logits_3_h_w)
    with pytest.raises(ParameterError, match="outside"):
        predictor.masks(embedding, 300.0, 10.0)
    with pytest.raises(ParameterError, match="uint8"):
        predictor.embed(rgb.astype(np.float32))


def test_outline_is_the_boundary_around_the_prompt() -> None:
    logits_h_w = np.full((16, 16), -1.0)
    logits_h_w[2:6, 2:6] = 1.0  # a small square
    logits_h_w[8:14, 4:12] = 1.0  # a bigger one, with a hole
    logits_h_w[10:12, 7:9] = -1.0
    ring = mask_outline(logits_h_w, 8 * 4.0, 11 * 4.0, cell_px=4.0, valid_hw=(64.0, 64.0))
    # Around the big square (the point is in its hole: holes are filled), edges half a cell out
    # of the outer cell centres, in input px.
    assert ring.min(axis=0) == pytest.approx((4 * 4.0, 8 * 4.0), abs=2.0)
    assert ring.max(axis=0) == pytest.approx((12 * 4.0, 14 * 4.0), abs=2.0)
    small = mask_outline(logits_h_w, 4 * 4.0, 4 * 4.0, cell_px=4.0, valid_hw=(64.0, 64.0))
    assert small.max(axis=0) == pytest.approx((6 * 4.0, 6 * 4.0), abs=2.0)
    # A point on nothing: the biggest boundary.
    assert np.array_equal(mask_outline(logits_h_w, 60.0, 2.0, cell_px=4.0, valid_hw=(64.0, 64.0)), ring)
    # Only the resized image counts: the padding beyond is outside.
    assert mask_outline(logits_h_w, 8.0, 8.0, cell_px=4.0, valid_hw=(64.0, 4.0)).shape == (0, 2)
    assert mask_outline(np.full((16, 16), -1.0), 8.0, 8.0, cell_px=4.0, valid_hw=(64.0, 64.0)).shape == (0, 2)
