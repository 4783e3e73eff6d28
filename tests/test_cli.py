"""The `inspectd` command line: output, exit codes (0 ok, 1 failure, 2 usage), error lines."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspectd import cli
from inspectd.commands import products_cmd
from inspectd.commands.score_cmd import heatmap_names
from inspectd.store import ModelStore

from engine_support import SOURCE_HW, copy_images, restore_logging, run  # noqa: F401 (autouse fixture)

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("inspectd")


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def test_images(enrolled) -> list[Path]:
    base = enrolled.dataset / "test"
    return [base / "good" / "000.png", base / "good" / "001.png", base / "crack" / "000.png"]


# ------------------------------------------------------------------------ enroll


def test_enroll_prints_a_summary(capsys, make_config, dataset: Path, tmp_path: Path) -> None:
    path, config = make_config()
    good = copy_images(sorted((dataset / "train" / "good").glob("*.png"))[:6], tmp_path / "good")
    (good / "empty.png").write_bytes(b"")
    # --config before the subcommand must be honoured (it was once overwritten by the
    # subparser's default and the built-in /var/lib paths were used instead).
    code, out, err = run(capsys, "--config", path, "enroll", "--product", "cli-part", good)
    assert code == 0, err
    for words in ("product", "cli-part", "version", "v0001", "images found", "7", "bank images",
                  "calibration images", "skipped", "bank size", "threshold", "time"):
        assert words in out
    assert f"skipped {good / 'empty.png'}: file is empty" in out
    assert "WARNING: backbone weights are RANDOM" in out
    stored = ModelStore(config.store_dir).open("cli-part")
    assert f"{stored.metadata['calibration']['threshold']:.4f}" in out
    assert f"{stored.metadata['coreset']['size']} x 1024" in out
    assert "6 (cross-fitted in 5 folds, also in the bank)" in out
    assert out.index("cost: 7 images x 576 patches (24x24) x 1024") < out.index("images found")
    assert "threshold: cross-fitted conformal (5 folds, 6 good images" in out
    code, out, err = run(capsys, "enroll", "--product", "cli-part", good, "--add", "--config", path)
    assert code == 1 and "already enrolled" in one_error_line(err)


def test_enroll_usage_errors(capsys, tmp_config_path: Path, tmp_path: Path) -> None:
    code, _, err = run(capsys, "--config", tmp_config_path, "enroll", "--product", "p", tmp_path / "missing")
    assert code == 2 and "not a folder" in one_error_line(err)
    code, _, err = run(capsys, "--config", tmp_config_path, "enroll", tmp_path)
    assert code == 2 and "--product" in one_error_line(err)


# ------------------------------------------------------------------------- score


def test_score_table(capsys, enrolled, test_images: list[Path]) -> None:
    code, out, err = run(capsys, "score", "--config", enrolled.config_path, "--product", "tiles", *test_images)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["image", "verdict", "score", "normalized", "heatmap", "/", "error"]
    assert set(lines[1]) <= {"-", " "}
    rows = lines[2:]
    assert len(rows) == 3
    for row, path in zip(rows, test_images):  # in the order given
        fields = row.split()
        assert fields[0] == str(path) and fields[1] in ("OK", "NG")
        assert float(fields[3]) == pytest.approx(float(fields[2]) / enrolled.report.threshold, abs=2e-4)


def test_score_json_with_heatmaps(capsys, enrolled, test_images: list[Path], tmp_path: Path) -> None:
    heatmaps = tmp_path / "maps"
    code, out, err = run(capsys, "--config", enrolled.config_path, "score", "--product", "tiles", "--json",
                         "--heatmap-dir", heatmaps, *test_images)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["path"] for r in rows] == [str(p) for p in test_images]
    for row in rows:
        assert {"path", "product", "model_version", "score", "normalized_score", "verdict", "heatmap"} <= set(row)
        assert row["product"] == "tiles" and row["model_version"] == "v0001"
        assert row["normalized_score"] == pytest.approx(row["score"] / enrolled.report.threshold)
        assert row["verdict"] == ("NG" if row["score"] >= enrolled.report.threshold else "OK")
        heatmap = Path(row["heatmap"])
        assert heatmap.parent == heatmaps and heatmap.is_file()
        assert heatmap.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert cv2.imread(str(heatmap)).shape == (*SOURCE_HW, 3)  # the original size, not 96 px
    # same stem in two folders: the folder name keeps them apart
    assert {Path(r["heatmap"]).name for r in rows} == {"good_000_heatmap.png", "001_heatmap.png",
                                                       "crack_000_heatmap.png"}


def test_heatmap_names() -> None:
    names = heatmap_names([Path("a/x.png"), Path("b/x.png"), Path("b/y.png")])
    assert names == {Path("a/x.png"): "a_x_heatmap.png", Path("b/x.png"): "b_x_heatmap.png",
                     Path("b/y.png"): "y_heatmap.png"}


def test_unreadable_images_are_error_rows(capsys, enrolled, test_images: list[Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    missing = tmp_path / "missing.png"
    code, out, err = run(capsys, "--config", enrolled.config_path, "score", "--product", "tiles", "--json",
                         test_images[0], broken, missing, test_images[2])
    assert code == 1
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["path"] for r in rows] == [str(test_images[0]), str(broken), str(missing), str(test_images[2])]
    assert "score" in rows[0] and "score" in rows[3] and "error" not in rows[0]
    assert str(broken) in rows[1]["error"] and "score" not in rows[1]
    assert str(missing) in rows[2]["error"] and "cannot read" in rows[2]["error"]
    # the table shows ERROR rows too
    code, out, _ = run(capsys, "--config", enrolled.config_path, "score", "--product", "tiles", broken)
    assert code == 1 and "ERROR" in out and str(broken) in out


# ---------------------------------------------------------------------- products


def test_products_lists_versions(capsys, enrolled) -> None:
    code, out, err = run(capsys, "--config", enrolled.config_path, "products")
    assert code == 0, err
    header, rule, *rows = out.splitlines()
    assert header.split()[:5] == ["product", "version", "versions", "bank", "size"]
    row = next(r for r in rows if r.split()[0] == "tiles")
    fields = row.split()
    assert fields[1] == "v0001" and fields[3] == str(enrolled.report.bank_size)
    assert fields[4] == f"{enrolled.report.threshold:.4f}" and fields[5] == "random"
    code, out, _ = run(capsys, "products", "--json", "--config", enrolled.config_path)
    info = next(r for r in map(json.loads, out.splitlines()) if r["product"] == "tiles")
    assert info["version"] == "v0001" and info["bank_size"] == enrolled.report.bank_size
    assert info["threshold"] == enrolled.report.threshold and info["images"] == 20


def test_products_all_versions_and_broken_model(capsys, tmp_config_path: Path, tmp_config) -> None:
    code, out, _ = run(capsys, "--config", tmp_config_path, "products")
    assert code == 0 and "no products enrolled" in out
    store = ModelStore(tmp_config.store_dir)
    meta = {"coreset": {"size": 5}, "calibration": {"threshold": 2.5}, "weights": {"source": "random"},
            "settings": {"backbone": "resnet18"}, "images": {"bank": [], "calibration": []},
            "created_at": "2024-01-01T00:00:00+00:00"}
    store.write("bolt", meta, {"bank": np.zeros((5, 4), np.float32)})
    store.write("bolt", meta, {"bank": np.zeros((5, 4), np.float32)})
    (store.root / "bolt" / "v0002" / "model.json").write_text("{broken")
    code, out, _ = run(capsys, "--config", tmp_config_path, "products", "--all-versions", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["version"] for r in rows] == ["v0001", "v0002"]
    assert rows[0]["bank_size"] == 5 and "corrupt" in rows[1]["error"]


# ------------------------------------------------------------ exit codes, errors


def test_usage_errors_exit_2(capsys, enrolled, test_images: list[Path]) -> None:
    code, _, err = run(capsys, "--config", enrolled.config_path, "score", test_images[0])
    assert code == 2 and "--product" in one_error_line(err)
    code, _, err = run(capsys, "--config", enrolled.config_path, "score", "--product", "tiles", "--bogus",
                       test_images[0])
    assert code == 2 and "--bogus" in one_error_line(err)
    code, _, err = run(capsys)
    assert code == 2 and one_error_line(err)
    code, _, err = run(capsys, "frobnicate")
    assert code == 2 and "frobnicate" in one_error_line(err)
    code, _, err = run(capsys, "--config", enrolled.config_path, "score", "--product", "tiles")
    assert code == 2 and one_error_line(err)


def test_failures_exit_1_with_one_line(capsys, enrolled, test_images: list[Path], tmp_path: Path) -> None:
    code, out, err = run(capsys, "--config", enrolled.config_path, "score", "--product", "ghost", test_images[0])
    assert code == 1 and out == ""
    line = one_error_line(err)
    assert line.startswith("inspectd: error:") and "no model for product 'ghost'" in line
    code, _, err = run(capsys, "--config", enrolled.config_path, "score", "--product", "../etc", test_images[0])
    assert code == 1 and "invalid product name" in one_error_line(err)
    code, _, err = run(capsys, "--config", enrolled.config_path, "score", "--product", "tiles", "--version",
                       "v0009", test_images[0])
    assert code == 1 and "v0009" in one_error_line(err)
    bad_config = tmp_path / "bad.toml"
    bad_config.write_text("[defaults]\nsizee = 64\n")
    code, _, err = run(capsys, "--config", bad_config, "products")
    assert code == 1 and "'defaults.sizee'" in one_error_line(err)
    code, _, err = run(capsys, "--config", tmp_path / "nowhere.toml", "products")
    assert code == 1 and "nowhere.toml" in one_error_line(err)


def test_debug_shows_tracebacks(capsys, enrolled, test_images: list[Path]) -> None:
    code, _, err = run(capsys, "--debug", "--config", enrolled.config_path, "score", "--product", "ghost",
                       test_images[0])
    assert code == 1 and "Traceback" in err and "ModelError" in err
    assert err.rstrip().splitlines()[-1].startswith("inspectd: error:")


def test_unexpected_errors(capsys, tmp_config_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(products_cmd, "ModelStore", boom)
    code, _, err = run(capsys, "--config", tmp_config_path, "products")
    line = one_error_line(err)
    assert code == 1 and "unexpected error: RuntimeError: disk on fire" in line and "--debug" in line
    with pytest.raises(RuntimeError, match="disk on fire"):
        cli.main(["--config", str(tmp_config_path), "products", "--debug"])


# ------------------------------------------------------------- real processes


def _command() -> list[str]:
    return [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "inspectd.cli"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "INSPECTD_CONFIG"}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(REPO)
    return env


def test_score_many_images_writes_each_its_own_heatmap_beside_the_scoring(capsys, enrolled, eval_set,
                                                                         tmp_path: Path) -> None:
    images = tmp_path / "many"  # two batches of 8, one image broken
    images.mkdir()
    for i, path in enumerate(eval_set.paths[:11]):
        shutil.copy(path, images / f"{i:02d}_{path.parent.name}.png")
    broken = images / "zz_broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    paths = sorted(images.iterdir())
    code, out, err = run(capsys, "--config", enrolled.config_path, "score", "--product", "tiles", "--json",
                         "--heatmap-dir", tmp_path / "maps", *paths)
    assert code == 1  # one image could not be scored
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["path"] for r in rows] == [str(p) for p in paths]
    assert "error" in rows[-1] and "heatmap" not in rows[-1]
    scored = rows[:-1]
    assert len({r["heatmap"] for r in scored}) == len(scored) == 11
    # a heatmap belongs to its own image: the same as scoring that image alone
    for row in (scored[0], scored[9]):
        code, out, _ = run(capsys, "--config", enrolled.config_path, "score", "--product", "tiles", "--json",
                           "--heatmap-dir", tmp_path / "alone", row["path"])
        alone = cv2.imread(json.loads(out)["heatmap"]).astype(int)
        assert np.abs(cv2.imread(row["heatmap"]).astype(int) - alone).mean() < 1.0


def test_subprocess_score_json(enrolled, test_images: list[Path], tmp_path: Path) -> None:
    done = subprocess.run(_command() + ["--config", str(enrolled.config_path), "score", "--product", "tiles",
                                        "--json", str(test_images[2])],
                          capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    (row,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert row["path"] == str(test_images[2]) and row["product"] == "tiles" and row["model_version"] == "v0001"
    assert row["verdict"] in ("OK", "NG") and row["score"] > 0
    assert "Traceback" not in done.stderr


def test_subprocess_failure_is_one_line(enrolled, test_images: list[Path], tmp_path: Path) -> None:
    done = subprocess.run(_command() + ["--config", str(enrolled.config_path), "score", "--product", "ghost",
                                        str(test_images[0])],
                          capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=300)
    assert done.returncode == 1 and done.stdout == ""
    assert one_error_line(done.stderr).startswith("inspectd: error: no model for product 'ghost'")
