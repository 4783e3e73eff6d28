"""bf16 against the fp32 oracle of the same model, on generated data (random resnet18
weights, 96 px). The issue asks for 1 % per image score and 0.005 on the metrics.
Plain bf16 meets the metrics and the 1 % for most images, but not for every one
(measured here: median 0.1 %, worst 1.5 %): that is why `auto` keeps bf16 only after
the enrollment check (tests/test_precision.py) and falls back to fp32 otherwise."""

from __future__ import annotations

import numpy as np
import torch
import pytest

from inspectd.config import load_config
from inspectd.extractor_cache import new_extractor
from inspectd.fidelity import compare_precisions
from inspectd.imageio import apply_geometry, read_image
from inspectd.metrics import image_auroc, pixel_auroc
from inspectd.settings_json import geometry_from_settings

from engine_support import write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def comparison(tmp_path_factory, dataset, eval_set):
    config = load_config(write_config(tmp_path_factory.mktemp("fidelity")))
    settings = config.defaults
    extractor, _ = new_extractor(settings, torch.device("cpu"))
    geometry = geometry_from_settings(settings).frozen_for(read_image(eval_set.paths[0]).shape[:2])
    load = lambda paths: [apply_geometry(read_image(p), geometry, str(p)) for p in paths]  # noqa: E731
    train = load(sorted((dataset / "train" / "good").glob("*.png")))
    return compare_precisions(extractor, settings, train, load(eval_set.paths), "bf16"), geometry


def test_bf16_image_scores_stay_near_fp32(comparison) -> None:
    result, _ = comparison
    assert np.median(result.rel_diff) <= 0.01
    assert (result.rel_diff <= 0.01).mean() >= 0.9
    assert result.rel_diff.max() <= 0.03  # the envelope measured for plain bf16, with margin
    assert result.rel_diff.max() > 0  # the two really were computed differently
    assert result.uncertified < 0.1 * result.queries  # the bf16 candidate stage certifies most patches


def test_bf16_metrics_equal_fp32_within_0_005(comparison, eval_set) -> None:
    import cv2

    result, geometry = comparison
    labels = eval_set.labels
    assert abs(image_auroc(labels, result.scores) - image_auroc(labels, result.oracle_scores)) <= 0.005
    hw = result.maps.shape[1:]
    masks = np.stack([np.zeros(hw, bool) if m is None else
                      cv2.resize(m.astype(np.uint8), (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST) > 0
                      for m in eval_set.masks])
    assert abs(pixel_auroc(masks, result.maps) - pixel_auroc(masks, result.oracle_maps)) <= 0.005
