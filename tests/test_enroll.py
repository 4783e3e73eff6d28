"""Enrollment end to end (random resnet18 weights, small images) and scoring quality.

The session product (conftest `enrolled`) is built once from 20 synthetic tile images;
tests that change a model work in their own store.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import inspectd
from inspectd import enrollment_images
from inspectd import extractor_cache
from inspectd.calibration import calibrate
from inspectd.enroll import enroll
from inspectd.errors import ImageError, InspectdError, ModelError
from inspectd.features import PatchFeatureExtractor
from inspectd.heatmap import map_to_source
from inspectd.metrics import image_auroc, pixel_auroc, threshold_metrics
from inspectd.model import NG, OK, ProductModel
from inspectd.store import ModelStore
from inspectd.synthetic import generate_images

from engine_support import SOURCE_HW, copy_images

pytestmark = pytest.mark.slow

GRID = (24, 24)  # layer1 of resnet18 at 96 px: stride 4


def train_images(dataset: Path) -> list[Path]:
    return sorted((dataset / "train" / "good").glob("*.png"))


def prepared(model: ProductModel, paths: list[Path]) -> list[np.ndarray]:
    return [model.read(p)[1] for p in paths]


@pytest.fixture(scope="module")
def session_scores(session_model: ProductModel, eval_set):
    results = session_model.score_images(prepared(session_model, eval_set.paths))
    return results


# -------------------------------------------------------------- model on disk


def test_model_files_and_metadata(enrolled) -> None:
    report = enrolled.report
    assert report.version == "v0001" and report.path == enrolled.config.store_dir / "tiles" / "v0001"
    assert sorted(p.name for p in report.path.iterdir()) == ["SHA256SUMS", "bank.npy", "calibration_scores.npy",
                                                             "model.json"]
    meta = json.loads((report.path / "model.json").read_text())
    assert meta["settings"]["backbone"] == "resnet18"
    assert meta["settings"]["layers"] == ["layer1", "layer2"]
    assert meta["weights"] == {"source": "random", "name": "random", "sha256": None, "seed": 0}
    assert meta["geometry"]["resize"] == "square" and meta["geometry"]["size"] == 96
    assert meta["geometry"]["resize_hw"] == [96, 96]
    assert meta["patch_grid"] == list(GRID) and meta["feature_dim"] == 1024
    # every one of the 20 images in the bank (x 576 patches, 10% coreset), and each
    # also has a cross-fitted calibration score
    assert report.images_found == 20 and report.bank_images == 20 and report.calibration_images == 20
    assert meta["coreset"]["ratio"] == 0.1 and meta["coreset"]["source_patches"] == 20 * 576
    assert meta["coreset"]["size"] == report.bank_size == math.ceil(0.1 * 20 * 576)
    assert np.load(report.path / "bank.npy").shape == (report.bank_size, 1024)
    assert np.load(report.path / "calibration_scores.npy").shape == (20,)
    cal = meta["calibration"]
    assert cal["threshold"] == report.threshold > 0
    assert cal["method"] == "conformal" and cal["guaranteed"] is True and cal["n_good"] == 20
    assert cal["folds"] == 5
    assert cal["false_alarm_rate"] == 0.2 and meta["calibration_required_images"] == 4
    assert cal["good_max"] >= cal["threshold"] >= cal["good_mean"] > 0
    assert len(meta["images"]["bank"]) == 20 and meta["images"]["calibration"] == []
    names = {e["name"] for e in meta["images"]["bank"]}
    assert names == {p.name for p in train_images(enrolled.dataset)}
    entry = meta["images"]["bank"][0]
    assert entry["sha256"] == hashlib.sha256((enrolled.dataset / "train" / "good" / entry["name"]).read_bytes()).hexdigest()
    assert meta["inspectd_version"] == inspectd.__version__
    assert dt.datetime.fromisoformat(meta["created_at"]).tzinfo is not None
    assert meta["timings_s"]["total"] > 0
    assert set(meta["timings_s"]) >= {"features", "coreset", "cross-fitting", "calibration"}
    assert meta["parent_version"] is None
    assert any("RANDOM" in w for w in report.warnings)


def test_threshold_is_the_conformal_rank_of_cross_fitted_scores(enrolled, session_model: ProductModel) -> None:
    scores = session_model.stored.array("calibration_scores")
    assert scores.shape == (20,) and np.all(scores > 0)
    assert session_model.threshold == np.sort(scores)[math.ceil(21 * 0.8) - 1]
    assert session_model.threshold == calibrate(scores, 0.2).threshold


def test_held_out_threshold_is_the_conformal_rank_of_held_out_scores(tmp_path: Path, make_config,
                                                                      dataset: Path) -> None:
    _, config = make_config(defaults={"calibration_folds": 0})
    report = enroll(config, "held", copy_images(train_images(dataset), tmp_path / "good"))
    assert (report.bank_images, report.calibration_images) == (16, 4)
    model = ProductModel.load(ModelStore(config.store_dir), "held")
    assert model.stored.metadata["coreset"]["source_patches"] == 16 * 576
    assert model.calibration.folds == 0
    held_out = torch.from_numpy(model.stored.array("calibration"))
    scores = model.scorer.image_scores(held_out)
    assert scores.shape == (4,)
    assert model.threshold == pytest.approx(calibrate(scores, 0.2).threshold, rel=1e-5)
    assert model.threshold == pytest.approx(np.sort(scores)[math.ceil(5 * 0.8) - 1], rel=1e-5)
    # the held-out files themselves score the same (features stored as float16)
    folder = tmp_path / "good"
    paths = [folder / e["name"] for e in model.stored.metadata["images"]["calibration"]]
    live = [r.score for r in model.score_images(prepared(model, paths))]
    np.testing.assert_allclose(live, scores, rtol=1e-2)


def test_local_weights_file_is_recorded(tmp_path: Path, make_config, dataset: Path, resnet18_state_file: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    weights = tmp_path / "line-pc" / "resnet18.pth"
    weights.parent.mkdir()
    shutil.copy(resnet18_state_file, weights)
    _, config = make_config()
    good = copy_images(train_images(dataset)[:5], tmp_path / "good")
    report = enroll(config, "filed", good, weights=str(weights))
    meta = json.loads((report.path / "model.json").read_text())
    assert meta["weights"]["source"] == "file"
    assert meta["weights"]["name"] == str(weights.resolve())
    assert meta["weights"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert meta["settings"]["weights"] == str(weights)
    assert not any("RANDOM" in w for w in report.warnings)
    monkeypatch.setattr(extractor_cache, "_extractors", {})  # a fresh process
    model = ProductModel.load(ModelStore(config.store_dir), "filed")
    assert model.score_images(prepared(model, [good / "000.png"]))[0].score >= 0
    # The file changes on the line PC: the model refuses to load rather than score wrongly.
    torch.save({k: v + 0.01 if v.is_floating_point() else v
                for k, v in torch.load(weights, weights_only=True).items()}, weights)
    monkeypatch.setattr(extractor_cache, "_extractors", {})
    with pytest.raises(ModelError, match="changed since enrollment"):
        ProductModel.load(ModelStore(config.store_dir), "filed")


# ------------------------------------------------------------------ bad inputs


def test_bad_files_are_skipped_with_reasons(tmp_path: Path, make_config, dataset: Path) -> None:
    _, config = make_config(images={"max_bytes": 40_000})
    good = copy_images(train_images(dataset)[:6], tmp_path / "good")
    (good / "00_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4 + b"IEND\xaeB`\x82")
    (good / "01_empty.png").write_bytes(b"")
    (good / "02_readme.png").write_text("not an image, just text\n")
    jpeg = cv2.imencode(".jpg", cv2.imread(str(good / "000.png")))[1].tobytes()
    (good / "03_truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    shutil.copy(good / "002.png", good / "zz_copy.png")
    cv2.imwrite(str(good / "04_large.bmp"), cv2.imread(str(good / "001.png")))  # 49 kB > 40 kB
    (good / "notes.txt").write_text("not even listed")
    report = enroll(config, "skips", good)
    skipped = {Path(name).name: reason for name, reason in report.skipped}
    duplicate = ({"002.png", "zz_copy.png"} & set(skipped)).pop()  # whichever came second
    assert set(skipped) == {"00_corrupt.png", "01_empty.png", "02_readme.png", "03_truncated.jpg",
                            "04_large.bmp", duplicate}
    assert "corrupt" in skipped["00_corrupt.png"] or "over the limit" in skipped["00_corrupt.png"]
    assert "empty" in skipped["01_empty.png"]
    assert "not a supported image" in skipped["02_readme.png"]
    assert "truncated JPEG" in skipped["03_truncated.jpg"]
    assert "duplicate of another image" in skipped[duplicate]
    assert "over the limit" in skipped["04_large.bmp"]
    assert all(str(good) not in reason for reason in skipped.values())  # the name is not repeated
    assert report.images_found == 12
    meta = json.loads((report.path / "model.json").read_text())
    assert {e["name"] for e in meta["images"]["skipped"]} == set(skipped)
    used = {e["name"] for e in meta["images"]["bank"] + meta["images"]["calibration"]}
    kept_copy = ({"002.png", "zz_copy.png"} - {duplicate}).pop()
    assert used == {f"{i:03d}.png" for i in range(6) if i != 2} | {kept_copy}
    # every usable image is in the bank and has a cross-fitted score
    assert report.calibration_images == report.bank_images == 6
    assert meta["coreset"]["source_patches"] == 6 * 576 and meta["calibration"]["n_good"] == 6


def test_unusable_folders(tmp_path: Path, make_config) -> None:
    _, config = make_config()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InspectdError, match="no images"):
        enroll(config, "none", empty)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.png").write_text("text")
    (junk / "b.jpg").write_bytes(b"")
    with pytest.raises(InspectdError, match="no image could be decoded"):
        enroll(config, "none", junk)
    with pytest.raises(ImageError, match="not a folder"):
        enroll(config, "none", tmp_path / "missing")
    assert ModelStore(config.store_dir).versions("none") == []


def test_no_calibration_images_is_refused(tmp_path: Path, make_config, dataset: Path) -> None:
    _, config = make_config(defaults={"calibration_fraction": 0.0, "calibration_folds": 0})
    with pytest.raises(InspectdError, match="held-out"):
        enroll(config, "nocal", copy_images(train_images(dataset)[:3], tmp_path / "good"))
    _, config = make_config()
    with pytest.raises(InspectdError, match="at least 2 usable good images"):
        enroll(config, "nocal", copy_images(train_images(dataset)[:1], tmp_path / "one"))
    assert ModelStore(config.store_dir).versions("nocal") == []


def test_too_few_calibration_images_warns(tmp_path: Path, make_config, dataset: Path) -> None:
    _, config = make_config(defaults={"false_alarm_rate": 0.01})
    report = enroll(config, "few", copy_images(train_images(dataset)[:5], tmp_path / "good"))
    assert report.calibration_images == 5
    assert report.calibration.method == "max_good" and not report.calibration.guaranteed
    assert any("only 5 cross-fitted good images" in w and "99" in w for w in report.warnings)


# ------------------------------------------------------------------------ --add


class _Counter:
    def __init__(self) -> None:
        self.decoded: list[str] = []
        self.extracted = 0


@pytest.fixture
def spies(monkeypatch: pytest.MonkeyPatch) -> _Counter:
    counter = _Counter()
    real_decode = enrollment_images.decode_image
    real_to_tensor = PatchFeatureExtractor.to_tensor

    def decode(data, *, name="<bytes>", **kwargs):
        counter.decoded.append(Path(name).name)
        return real_decode(data, name=name, **kwargs)

    def to_tensor(self, images):
        counter.extracted += len(images)
        return real_to_tensor(self, images)

    monkeypatch.setattr(enrollment_images, "decode_image", decode)
    monkeypatch.setattr(PatchFeatureExtractor, "to_tensor", to_tensor)
    return counter


def test_add_extends_a_held_out_version(tmp_path: Path, make_config, dataset: Path, spies: _Counter) -> None:
    _, config = make_config(defaults={"calibration_folds": 0})
    images = train_images(dataset)
    first = enroll(config, "grow", copy_images(images[:8], tmp_path / "day1"))
    assert (first.bank_images, first.calibration_images) == (6, 2)
    spies.decoded.clear()
    spies.extracted = 0

    new = images[8:14]
    day2 = copy_images(new + images[:2], tmp_path / "day2")  # two already enrolled
    second = enroll(config, "grow", day2, add=True)

    assert sorted(spies.decoded) == sorted(p.name for p in new)  # the old ones are not decoded again
    assert spies.extracted == 6 + 2  # only the new images went through the backbone (+ the cost probe's 2 blanks)
    assert second.version == "v0002"
    assert {Path(n).name: r for n, r in second.skipped} == {"000.png": "already enrolled (same content)",
                                                            "001.png": "already enrolled (same content)"}
    store = ModelStore(config.store_dir)
    assert store.versions("grow") == ["v0001", "v0002"]
    v1, v2 = store.open("grow", "v0001").metadata, store.open("grow", "v0002").metadata
    assert v2["parent_version"] == "v0001"
    assert v2["settings"] == v1["settings"] and v2["geometry"] == v1["geometry"]
    new_bank = second.bank_images
    assert new_bank + second.calibration_images == 6
    assert v2["coreset"]["source_patches"] == v1["coreset"]["source_patches"] + new_bank * 576
    assert v2["coreset"]["size"] == second.bank_size == math.ceil(0.1 * v2["coreset"]["source_patches"])
    assert second.bank_size > first.bank_size
    assert v2["images"]["bank"][:6] == v1["images"]["bank"]
    assert len(v2["images"]["bank"]) == 6 + new_bank
    assert len(v2["images"]["calibration"]) == 2 + second.calibration_images
    # The threshold is recomputed for the new bank over all held-out images.
    assert v2["calibration"]["n_good"] == 2 + second.calibration_images
    model = ProductModel.load(store, "grow")
    held_out = torch.from_numpy(model.stored.array("calibration"))
    assert held_out.shape[0] == v2["calibration"]["n_good"]
    scores = model.scorer.image_scores(held_out)
    assert model.threshold == pytest.approx(calibrate(scores, 0.2).threshold, rel=1e-5)
    old = ProductModel.load(store, "grow", "v0001")
    assert old.threshold == first.threshold and old.index.bank.shape[0] == first.bank_size


def test_add_with_only_enrolled_images_changes_nothing(tmp_path: Path, make_config, dataset: Path,
                                                       spies: _Counter) -> None:
    _, config = make_config()
    folder = copy_images(train_images(dataset)[:5], tmp_path / "good")
    enroll(config, "same", folder)
    spies.decoded.clear()
    with pytest.raises(InspectdError, match="already enrolled"):
        enroll(config, "same", folder, add=True)
    assert spies.decoded == []
    assert ModelStore(config.store_dir).versions("same") == ["v0001"]


def test_add_needs_an_existing_model(tmp_path: Path, make_config, dataset: Path) -> None:
    _, config = make_config()
    with pytest.raises(ModelError, match="no model for product 'ghost'"):
        enroll(config, "ghost", copy_images(train_images(dataset)[:2], tmp_path / "g"), add=True)
    enroll(config, "fixed", tmp_path / "g")
    with pytest.raises(InspectdError, match="--weights cannot change with --add"):
        enroll(config, "fixed", tmp_path / "g", add=True, weights="random")


# ------------------------------------------------------------------------ --bad


def test_bad_images_refine_the_threshold(tmp_path: Path, make_config, dataset: Path, eval_set) -> None:
    _, config = make_config(products={"refined": {"threshold_mode": "best_f1"}})
    good = copy_images(train_images(dataset)[:10], tmp_path / "good")
    defects = [p for p, label in zip(eval_set.paths, eval_set.labels) if label]
    bad = tmp_path / "bad"
    bad.mkdir()
    for path in defects:
        shutil.copy(path, bad / f"{path.parent.name}_{path.name}")
    report = enroll(config, "refined", good, bad_dir=bad)
    cal = report.calibration
    assert cal.method == "best_f1" and cal.n_bad == report.bad_images == len(defects)
    assert cal.guaranteed is False
    meta = json.loads((report.path / "model.json").read_text())
    assert meta["images"]["bad"] == len(defects) and meta["calibration"]["method"] == "best_f1"
    model = ProductModel.load(ModelStore(config.store_dir), "refined")
    good_scores = model.stored.array("calibration_scores")  # cross-fitted
    bad_scores = np.array([r.score for r in model.score_images(prepared(model, sorted(bad.iterdir())))])
    assert cal.bad_min == pytest.approx(bad_scores.min(), rel=1e-2)
    labels = np.r_[np.zeros(good_scores.size), np.ones(bad_scores.size)]
    scores = np.r_[good_scores, bad_scores]
    assert np.min(np.abs(scores - cal.threshold) / cal.threshold) < 1e-2  # one of the scores
    conformal = calibrate(good_scores, 0.2).threshold
    f1 = threshold_metrics(labels, scores, cal.threshold * (1 - 1e-3)).f1
    assert f1 >= threshold_metrics(labels, scores, conformal).f1 - 1e-9


# --------------------------------------------------------------------- scoring


def test_results_carry_verdict_and_normalised_score(session_model: ProductModel, session_scores) -> None:
    for result in session_scores:
        assert result.normalized_score == pytest.approx(result.score / session_model.threshold)
        assert result.verdict == (NG if result.score >= session_model.threshold else OK)
        assert result.threshold == session_model.threshold
        assert result.anomaly_map.shape == (96, 96) and result.anomaly_map.dtype == np.float32
        assert set(result.timings_ms) == {"backbone", "aggregate", "search", "map"}
    assert {r.verdict for r in session_scores} == {OK, NG}


def test_defects_score_higher_than_goods(eval_set, session_scores) -> None:
    scores = np.array([r.score for r in session_scores])
    labels = eval_set.labels
    assert image_auroc(labels, scores) > 0.8
    assert scores[labels == 1].mean() > scores[labels == 0].mean()


def test_anomaly_map_peaks_at_the_defect(session_model: ProductModel, eval_set, session_scores) -> None:
    hits = []
    for result, mask in zip(session_scores, eval_set.masks):
        if mask is None:
            continue
        source_map = map_to_source(result.anomaly_map, session_model.geometry, SOURCE_HW)
        # tolerance of one feature cell (stride 4 at 96 px = 5.3 source px) each side
        near = cv2.dilate(mask.astype(np.uint8), np.ones((11, 11), np.uint8)) > 0
        hits.append(near[np.unravel_index(np.argmax(source_map), SOURCE_HW)])
    assert len(hits) == 12
    assert np.mean(hits) > 0.5


def test_fast_search_equals_exact_oracle(enrolled, session_model: ProductModel, eval_set, session_scores) -> None:
    exact = ProductModel.load(ModelStore(enrolled.config.store_dir), enrolled.product, search_mode="exact")
    assert exact.index.mode == "exact" and session_model.index.mode == "fast"
    exact_results = exact.score_images(prepared(exact, eval_set.paths))
    fast_scores = np.array([r.score for r in session_scores])
    exact_scores = np.array([r.score for r in exact_results])
    np.testing.assert_allclose(fast_scores, exact_scores, rtol=5e-3)
    labels = eval_set.labels
    assert abs(image_auroc(labels, fast_scores) - image_auroc(labels, exact_scores)) <= 0.005
    masks = np.stack([cv2.resize((m if m is not None else np.zeros(SOURCE_HW, bool)).astype(np.uint8), (96, 96),
                                 interpolation=cv2.INTER_NEAREST) > 0 for m in eval_set.masks])
    fast_maps = np.stack([r.anomaly_map for r in session_scores])
    exact_maps = np.stack([r.anomaly_map for r in exact_results])
    assert abs(pixel_auroc(masks, fast_maps) - pixel_auroc(masks, exact_maps)) <= 0.005
    assert pixel_auroc(masks, fast_maps) > 0.8


def test_batch_size_does_not_change_scores(session_model: ProductModel, eval_set,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    images = prepared(session_model, eval_set.paths[:10])
    by_size = {}
    for size in (1, 5):
        monkeypatch.setattr(session_model, "settings", dataclasses.replace(session_model.settings, batch_size=size))
        by_size[size] = session_model.score_images(images)
    np.testing.assert_allclose([r.score for r in by_size[1]], [r.score for r in by_size[5]], rtol=1e-4)
    np.testing.assert_allclose(np.stack([r.anomaly_map for r in by_size[1]]),
                               np.stack([r.anomaly_map for r in by_size[5]]), rtol=1e-4, atol=1e-4)


def test_wrong_input_size_is_refused(session_model: ProductModel) -> None:
    with pytest.raises(ImageError, match="does not match"):
        session_model.score_images([np.zeros((64, 64, 3), np.float32)])


def test_keep_aspect_non_square(tmp_path: Path, make_config) -> None:
    _, config = make_config(products={"strip": {"resize": "keep_aspect", "size": 64}})
    generate_images(tmp_path / "good", n_good=6, n_defect=0, size=(96, 160), seed=3)
    report = enroll(config, "strip", tmp_path / "good")
    assert report.feature_dim == 1024
    model = ProductModel.load(ModelStore(config.store_dir), "strip")
    assert model.input_hw == (64, 107)
    assert model.stored.metadata["patch_grid"] == [16, 27]
    defect = generate_images(tmp_path / "test", n_good=1, n_defect=1, size=(96, 160), seed=4)
    original, image = model.read(defect[1])
    assert original.shape == (96, 160, 3) and image.shape == (64, 107, 3)
    results = model.score_images([image, model.read(defect[0])[1]])
    assert results[0].anomaly_map.shape == (64, 107)
    assert map_to_source(results[0].anomaly_map, model.geometry, (96, 160)).shape == (96, 160)
    square = tmp_path / "square.png"
    cv2.imwrite(str(square), np.zeros((120, 120, 3), np.uint8))
    with pytest.raises(ImageError, match="aspect ratio"):
        model.read(square)


def test_missing_product_is_a_clear_error(tmp_config) -> None:
    with pytest.raises(ModelError, match="no model for product 'nothing-here'.*inspectd enroll"):
        ProductModel.load(ModelStore(tmp_config.store_dir), "nothing-here")


def test_describe(session_model: ProductModel, enrolled) -> None:
    info = session_model.describe()
    assert info["product"] == "tiles" and info["version"] == "v0001"
    assert info["bank_size"] == enrolled.report.bank_size and info["threshold"] == enrolled.report.threshold
    assert info["weights"] == "random" and info["backbone"] == "resnet18"
