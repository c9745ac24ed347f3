"""The ``context`` extractor: ``color`` plus haematoxylin texture, on real MoNuSeg pixels."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

from slidelabel.pipelines.features import FEATURES
from slidelabel.pipelines.features.color import colour_channels
from slidelabel.pipelines.features.context import TEXTURE_CHANNELS
from slidelabel.pipelines.features.extract import features_of_array
from slidelabel.pipelines.features.filterbank import filter_stack
from slidelabel.pipelines.superpixels import SuperpixelParams, superpixel_array

N_COLOUR = len(FEATURES["color"].channel_names())


@pytest.fixture(scope="module")
def crop(monuseg_pair: Callable) -> tuple[np.ndarray, np.ndarray]:
    rgb = np.ascontiguousarray(monuseg_pair(2)[0][:256, :240])
    return rgb, superpixel_array(rgb, SuperpixelParams(step=16))


def test_names_are_colours_then_texture() -> None:
    names = FEATURES["context"].channel_names()
    assert names[:N_COLOUR] == FEATURES["color"].channel_names()
    assert names[N_COLOUR:] == [f"{c}_mean" for c in TEXTURE_CHANNELS] + [f"{c}_std" for c in TEXTURE_CHANNELS]
    assert len(names) == 121


def test_colour_part_is_color_and_texture_is_the_haematoxylin_filter_bank(crop: tuple[np.ndarray, np.ndarray]) -> None:
    rgb, labels = crop
    feats_N_D = features_of_array(rgb, labels, extractor="context")
    np.testing.assert_array_equal(feats_N_D[:, :N_COLOUR], features_of_array(rgb, labels, extractor="color"))
    # The whole crop is one window, so the texture is the filter bank of the whole crop's
    # haematoxylin density (reflected at its edges), averaged over each superpixel.
    texture_H_W_T = filter_stack(colour_channels(rgb)[..., 6])
    present = np.unique(labels[labels > 0])
    count_M = np.bincount(labels.ravel())[present]
    for t in (0, 10, len(TEXTURE_CHANNELS) - 1):
        mean_M = np.bincount(labels.ravel(), weights=texture_H_W_T[..., t].ravel().astype(np.float64))[present] / count_M
        np.testing.assert_allclose(feats_N_D[present - 1, N_COLOUR + t], mean_M, rtol=1e-4, atol=1e-6)


def test_tiles_give_the_features_of_the_whole_image(crop: tuple[np.ndarray, np.ndarray]) -> None:
    """The texture's margin holds every kernel: 96 px tiles change nothing but float rounding."""
    rgb, labels = crop
    whole_N_D = features_of_array(rgb, labels, extractor="context")
    np.testing.assert_allclose(features_of_array(rgb, labels, extractor="context", tile_size=96), whole_N_D,
                               rtol=1e-4, atol=1e-5)


def _texture(monuseg_pair: Callable, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Texture features of one image's superpixels, z-scored within it, and whether most of each
    superpixel is nucleus."""
    rgb, mask = monuseg_pair(index)
    rgb, mask = rgb[:500, :500], mask[:500, :500]
    labels = superpixel_array(rgb, SuperpixelParams(step=16))
    feats_N_D = features_of_array(rgb, labels, extractor="context")[:, N_COLOUR:]
    present_N = ~np.isnan(feats_N_D[:, 0])
    area_N = np.bincount(labels.ravel(), minlength=len(feats_N_D) + 1)[1:]
    nucleus_N = np.bincount(labels.ravel(), weights=mask.ravel(), minlength=len(feats_N_D) + 1)[1:] > area_N / 2
    feats_M_D = feats_N_D[present_N]
    return (feats_M_D - feats_M_D.mean(0)) / (feats_M_D.std(0) + 1e-6), nucleus_N[present_N]


def test_haematoxylin_texture_alone_finds_nuclei_in_other_images(monuseg_pair: Callable) -> None:
    train = [_texture(monuseg_pair, i) for i in (5, 6, 7)]
    test = [_texture(monuseg_pair, i) for i in (20, 21)]
    model = LogisticRegression(max_iter=2000, class_weight="balanced")
    model.fit(np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]))
    truth = np.concatenate([y for _, y in test])
    score = balanced_accuracy_score(truth, model.predict(np.concatenate([x for x, _ in test])))
    assert score > 0.8
