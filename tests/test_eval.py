"""`inspectd eval`: dataset layouts, metrics, masks through the geometry, report, errors.

Small on purpose (64 px synthetic images, resnet18 with random weights) so the whole
module runs in well under a minute on a 2-core CPU.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspectd import metrics
from inspectd.calibration import FalseAlarmSpread
from inspectd.cli import main
from inspectd.config import load_config
from inspectd.enroll import enroll
from inspectd.errors import ImageError
from inspectd.evaluation import compute_metrics, discover, evaluate, load_mask
from inspectd.evaluation.dataset import split_good
from inspectd.evaluation.measures import METRIC_KEYS
from inspectd.evaluation.summary import results_json
from inspectd.imageio import Geometry
from inspectd.model import ProductModel
from inspectd.store import ModelStore
from inspectd.synthetic import DatasetSpec, generate_dataset, generate_images

from engine_support import write_config

pytestmark = pytest.mark.slow

SIZE = {"size": 64}
CATEGORIES = ("fabric", "tiles")
N_TEST_GOOD, N_DEFECT_TYPES = 4, 4
JSON_KEYS = {"image_auroc", "pixel_auroc", "aupro", "f1", "miss_rate", "false_alarm_rate", "threshold", "n_good",
             "n_defect", "weights"}


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of two MVTec-layout categories (10 train, 4 test goods, 1 per defect
    type) and one folder that is no category."""
    root = tmp_path_factory.mktemp("eval-data")
    for category in CATEGORIES:
        generate_dataset(root, DatasetSpec(category=category, n_train=10, n_test_good=N_TEST_GOOD,
                                           n_test_defect=1, size=(64, 64), seed=3))
    (root / "notes").mkdir()
    return root


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Path:
    """A store with both categories enrolled from train/good."""
    path = write_config(tmp_path_factory.mktemp("eval-store"), defaults=SIZE)
    config = load_config(path)
    for category in CATEGORIES:
        enroll(config, category, data / category / "train" / "good")
    return path


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["eval", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def table_row(out: str, first: str) -> list[str]:
    rows = [line.split() for line in out.splitlines() if line.split()[:1] == [first]]
    assert len(rows) == 1, out
    return rows[0]


def load_model(config_path: Path, product: str) -> ProductModel:
    return ProductModel.load(ModelStore(load_config(config_path).store_dir), product)


# ---------------------------------------------------------------- end to end


def test_mvtec_layout_with_enroll_end_to_end(tmp_path: Path, data: Path, capsys) -> None:
    cfg = str(write_config(tmp_path / "cfg", defaults=SIZE))
    code, out, err = run_cli(capsys, str(data / "tiles"), "--enroll", "--config", cfg)
    assert code == 0, err
    assert out.splitlines()[0].split()[:4] == ["category", "n", "good", "n"]
    row = table_row(out, "tiles")
    assert row[1:3] == [str(N_TEST_GOOD), str(N_DEFECT_TYPES)]
    assert not any(line.startswith("mean") for line in out.splitlines())
    assert "enrolled tiles v0001 from 10 images in train/good" in out
    assert "RANDOM BACKBONE WEIGHTS" in err

    code, out, err = run_cli(capsys, str(data / "tiles"), "--json", "--config", cfg)
    assert code == 0, err
    result = json.loads(out)
    assert set(result) == {"categories", "mean"}
    tiles = result["categories"]["tiles"]
    assert JSON_KEYS <= set(tiles)
    assert (tiles["n_good"], tiles["n_defect"], tiles["weights"]) == (N_TEST_GOOD, N_DEFECT_TYPES, "random")
    assert tiles["model_version"] == "v0001" and tiles["threshold"] > 0
    for key in METRIC_KEYS:
        assert 0.0 <= tiles[key] <= 1.0, key
        assert result["mean"][key] == tiles[key]
    # The table printed the same figures.
    for value, key in zip(row[3:9], METRIC_KEYS):
        assert value == f"{tiles[key]:.4f}"
    assert "RANDOM BACKBONE WEIGHTS" in err


def test_no_random_weights_warning_for_a_weights_file(tmp_path: Path, data: Path, resnet18_state_file: Path,
                                                      capsys) -> None:
    cfg = str(write_config(tmp_path / "cfg", defaults=SIZE))
    code, out, err = run_cli(capsys, str(data / "tiles"), "--enroll", "--weights", str(resnet18_state_file),
                             "--json", "--config", cfg)
    assert code == 0, err
    assert json.loads(out)["categories"]["tiles"]["weights"] == "file"
    assert "RANDOM" not in err


def test_reported_metrics_equal_inspectd_metrics(config_path: Path, data: Path, capsys) -> None:
    model = load_model(config_path, "tiles")
    categories, _ = discover(data / "tiles")
    ev = evaluate(model, categories[0].samples, "tiles")
    labels = ev.labels
    assert labels.tolist() == [s.label for s in categories[0].samples]
    # Scores and maps are the model's own for the same images.
    direct = model.score_images([model.read(s.path)[1] for s in ev.samples])
    np.testing.assert_allclose(ev.scores, [r.score for r in direct], rtol=1e-5)
    np.testing.assert_allclose(ev.maps, np.stack([r.anomaly_map for r in direct]), rtol=1e-5, atol=1e-6)
    # Every synthetic defect has a mask; good images count with an all-zero mask.
    assert ev.has_mask.all() and not ev.masks[labels == 0].any() and ev.masks[labels == 1].any(axis=(1, 2)).all()
    at = metrics.threshold_metrics(labels, ev.scores, model.threshold)
    expected = {"image_auroc": metrics.image_auroc(labels, ev.scores),
                "pixel_auroc": metrics.pixel_auroc(ev.masks, ev.maps),
                "aupro": metrics.aupro(ev.masks, ev.maps, fpr_limit=0.3),
                "f1": at.f1, "miss_rate": at.miss_rate, "false_alarm_rate": at.false_alarm_rate}
    for key, value in expected.items():
        assert getattr(ev.metrics, key) == pytest.approx(value, abs=1e-12), key
    # ... and the command reports those numbers.
    code, out, err = run_cli(capsys, str(data / "tiles"), "--json", "--config", str(config_path))
    assert code == 0, err
    reported = json.loads(out)["categories"]["tiles"]
    for key, value in expected.items():
        assert reported[key] == pytest.approx(value, abs=1e-9), key
    assert reported["threshold"] == pytest.approx(model.threshold)


def test_folder_of_categories_has_a_mean_row(config_path: Path, data: Path, capsys) -> None:
    code, out, err = run_cli(capsys, str(data), "--json", "--config", str(config_path))
    assert code == 0, err
    result = json.loads(out)
    assert sorted(result["categories"]) == list(CATEGORIES)
    assert result["mean"]["n_categories"] == 2
    for key in METRIC_KEYS:
        values = [result["categories"][c][key] for c in CATEGORIES]
        assert result["mean"][key] == pytest.approx(sum(values) / 2), key
    assert "ignored folder notes" in err

    code, out, err = run_cli(capsys, str(data), "--config", str(config_path))
    assert code == 0, err
    mean_row = table_row(out, "mean")
    assert mean_row[1:] == [f"{result['mean'][key]:.4f}" for key in METRIC_KEYS]
    assert [table_row(out, c)[0] for c in CATEGORIES] == list(CATEGORIES)
    assert "ignored folder notes: no recognisable layout" in out


def make_plain(data: Path, target: Path) -> Path:
    """good/ (train and test goods of tiles), bad/ (its defects) and masks/ in both
    naming styles, with one defect image left without a mask."""
    tiles = data / "tiles"
    for split in ("train", "test"):
        for path in sorted((tiles / split / "good").glob("*.png")):
            (target / "good").mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target / "good" / f"{split}_{path.name}")
    defects = sorted(p for p in (tiles / "test").glob("*/*.png") if p.parent.name != "good")
    (target / "bad").mkdir()
    (target / "masks").mkdir()
    for i, path in enumerate(defects):
        name = f"{path.parent.name}_{path.stem}"
        shutil.copy(path, target / "bad" / f"{name}.png")
        mask = tiles / "ground_truth" / path.parent.name / f"{path.stem}_mask.png"
        if i == 1:
            continue  # no mask: left out of the pixel metrics only
        shutil.copy(mask, target / "masks" / (f"{name}.png" if i == 2 else f"{name}_mask.png"))
    return target


def test_plain_layout(tmp_path: Path, data: Path, capsys) -> None:
    plain = make_plain(data, tmp_path / "plain_tiles")
    cfg = str(write_config(tmp_path / "cfg", defaults=SIZE))
    code, out, err = run_cli(capsys, str(plain), "--enroll", "--json", "--config", cfg)
    assert code == 0, err
    result = json.loads(out)["categories"]["plain_tiles"]
    # 14 good images: 7 enrolled, 7 tested; every defect tested, 3 of 4 with masks.
    assert (result["n_good"], result["n_defect"], result["n_pixel_images"]) == (7, 4, 10)
    assert any("enrolled plain_tiles v0001 from 7 of the 14 images in good/" in n for n in result["notes"])
    assert all(result[k] is not None for k in METRIC_KEYS)
    # what was measured, beside what the threshold was calibrated for
    assert result["peak_ram_mb"] > 0 and result["ms_per_image"] > 0
    assert result["target_false_alarm_rate"] == 0.2 and result["calibration_folds"] == 5
    spread = FalseAlarmSpread.of(7, 0.2)  # 7 cross-fitted good scores, rank 7: Beta(1, 7)
    assert result["expected_false_alarm_range"] == pytest.approx([spread.low, spread.high])
    assert 0.0 < spread.low < 0.2 < spread.high < 0.5
    assert any(n.startswith("estimated before enrollment: 7 images x") for n in result["notes"])
    # The images enrolled are exactly the seeded half, and none of them is tested.
    categories, _ = discover(plain)
    enrolled_paths, tested = split_good(categories[0].samples, seed=0)
    stored = ModelStore(load_config(cfg).store_dir).open("plain_tiles").metadata["images"]
    assert {e["name"] for e in stored["bank"] + stored["calibration"]} == {p.name for p in enrolled_paths}
    assert not {p.name for p in enrolled_paths} & {s.path.name for s in tested}

    code, out, err = run_cli(capsys, str(plain), "--config", cfg)  # without --enroll: all of good/
    assert code == 0, err
    assert table_row(out, "plain_tiles")[1:3] == ["14", "4"]


def test_masks_follow_the_geometry(tmp_path: Path) -> None:
    mask = np.zeros((96, 128), np.uint8)
    mask[24:48, 64:96] = 255
    path = tmp_path / "mask.png"
    cv2.imwrite(str(path), mask)
    square = Geometry(resize="square", size=64).frozen_for((96, 128))
    expected = np.zeros((64, 64), bool)
    expected[16:32, 32:48] = True
    np.testing.assert_array_equal(load_mask(str(path), (96, 128), square, 10**8), expected)
    cut = Geometry(resize="keep_aspect", size=32, roi=(32, 0, 64, 96)).frozen_for((96, 128))
    expected = np.zeros((48, 32), bool)
    expected[12:24, 16:32] = True
    np.testing.assert_array_equal(load_mask(str(path), (96, 128), cut, 10**8), expected)
    with pytest.raises(ImageError, match="mask is 128x96"):
        load_mask(str(path), (64, 64), square, 10**8)


def test_masks_aligned_with_maps_when_the_model_resizes(tmp_path: Path, data: Path) -> None:
    """Source images 96x128, model input 64x64: a known rectangle lands where expected."""
    paths = generate_images(tmp_path / "src", n_good=9, n_defect=0, category="tiles", size=(96, 128), seed=5)
    plain = tmp_path / "resized"
    for folder in ("good", "bad", "masks"):
        (plain / folder).mkdir(parents=True)
    for path in paths[:8]:
        shutil.copy(path, plain / "good" / path.name)
    image = cv2.imread(str(paths[8]))
    image[24:48, 64:96] = (20, 20, 20)
    cv2.imwrite(str(plain / "bad" / "dark.png"), image)
    mask = np.zeros((96, 128), np.uint8)
    mask[24:48, 64:96] = 255
    cv2.imwrite(str(plain / "masks" / "dark_mask.png"), mask)
    config = load_config(write_config(tmp_path / "cfg", defaults=SIZE))
    enroll(config, "resized", plain / "good")
    model = ProductModel.load(ModelStore(config.store_dir), "resized")
    assert model.input_hw == (64, 64)
    ev = evaluate(model, discover(plain)[0][0].samples, "resized")
    defect = ev.labels.tolist().index(1)
    expected = np.zeros((64, 64), bool)
    expected[16:32, 32:48] = True
    np.testing.assert_array_equal(ev.masks[defect], expected)
    assert ev.maps.shape[1:] == ev.masks.shape[1:] == (64, 64)


def test_report_pages_and_plots(config_path: Path, data: Path, tmp_path: Path, capsys) -> None:
    report = tmp_path / "report"
    code, out, err = run_cli(capsys, str(data), "--report", str(report), "--config", str(config_path))
    assert code == 0, err
    page = (report / "index.html").read_text(encoding="utf-8")
    sources = re.findall(r'<img src="([^"]+)"', page)
    for category in CATEGORIES:
        mine = [s for s in sources if f"_{category}_" in s]
        assert sum(s.endswith("_roc.png") for s in mine) == 1 and sum(s.endswith("_hist.png") for s in mine) == 1
        assert sum("_fa_" in s for s in mine) == N_TEST_GOOD and sum("_miss_" in s for s in mine) == 4
    for source in sources:
        assert not source.startswith("/") and (report / source).is_file(), source
        image = cv2.imread(str(report / source))
        assert image is not None and image.std() > 0, source
    roc = cv2.imread(str(report / next(s for s in sources if s.endswith("_roc.png"))))
    assert roc.shape == (520, 520, 3)
    assert "RANDOM BACKBONE WEIGHTS" in page and f"report: {report / 'index.html'}" in out


# ------------------------------------------------------------ figures and JSON


def test_undefined_metrics_are_nan_and_null() -> None:
    labels = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    maps = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    no_defect_pixels = compute_metrics(labels, scores, 0.5, np.zeros((2, 8, 8), bool), maps)
    assert no_defect_pixels.image_auroc == pytest.approx(0.75)
    assert math.isnan(no_defect_pixels.pixel_auroc) and math.isnan(no_defect_pixels.aupro)
    assert (no_defect_pixels.f1, no_defect_pixels.miss_rate, no_defect_pixels.false_alarm_rate) == (2 / 3, 0.5, 0.0)
    only_good = compute_metrics(labels[:2], scores[:2], 0.3, np.zeros((0, 8, 8), bool), maps[:0])
    assert math.isnan(only_good.image_auroc) and math.isnan(only_good.miss_rate)
    assert only_good.false_alarm_rate == 0.5 and only_good.n_pixel_images == 0


def test_json_mean_skips_undefined_categories(config_path: Path, data: Path) -> None:
    import dataclasses

    model = load_model(config_path, "tiles")
    ev = evaluate(model, discover(data / "tiles")[0][0].samples, "tiles")
    other = dataclasses.replace(ev, category="other", metrics=dataclasses.replace(ev.metrics, aupro=float("nan")))
    result = results_json([ev, other])
    assert result["categories"]["other"]["aupro"] is None
    assert result["mean"]["aupro"] == pytest.approx(ev.metrics.aupro)
    json.dumps(result, allow_nan=False)


# --------------------------------------------------------------------- errors


def test_unrecognised_dataset_is_an_error(tmp_path: Path, tmp_config_path: Path, capsys) -> None:
    (tmp_path / "photos" / "misc").mkdir(parents=True)
    generate_images(tmp_path / "photos" / "misc", 1, 0, size=(64, 64))
    code, out, err = run_cli(capsys, str(tmp_path / "photos"), "--config", str(tmp_config_path))
    assert code == 1 and out == ""
    assert "no recognisable dataset layout" in err and err.count("\n") == 1


def test_missing_model_without_enroll_is_an_error(data: Path, tmp_config_path: Path, capsys) -> None:
    code, out, err = run_cli(capsys, str(data / "tiles"), "--config", str(tmp_config_path))
    assert code == 1 and out == ""
    assert "no model for product 'tiles'" in err


@pytest.mark.parametrize("extra, message", [
    (["--enroll", "--version", "v0001"], "--version cannot be used with --enroll"),
    (["--weights", "random"], "--weights only applies with --enroll"),
    (["--product", "x"], "--product needs a single category"),
])
def test_usage_errors(data: Path, tmp_config_path: Path, capsys, extra: list[str], message: str) -> None:
    code, _, err = run_cli(capsys, str(data), *extra, "--config", str(tmp_config_path))
    assert code == 2 and message in err


def test_category_folder_that_is_no_product_name(tmp_path: Path, data: Path, tmp_config_path: Path,
                                                 capsys) -> None:
    shutil.copytree(data / "tiles", tmp_path / "tiles 2")
    code, _, err = run_cli(capsys, str(tmp_path / "tiles 2"), "--config", str(tmp_config_path))
    assert code == 1 and "name the product with --product" in err
