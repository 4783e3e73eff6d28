"""Tests for the synthetic-defect data generator (inspectd.synthetic)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspectd import synthetic
from inspectd.synthetic import (
    CATEGORIES,
    DEFECT_TYPES,
    DatasetSpec,
    add_defect,
    generate_dataset,
    generate_images,
    main,
    make_good,
)

REPO = Path(__file__).resolve().parents[1]
SMALL = (48, 64)  # non-square on purpose: (height, width)
CASES = [(category, defect) for category, kind in CATEGORIES.items() for defect in DEFECT_TYPES[kind]]


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _small_spec(category: str, seed: int = 0) -> DatasetSpec:
    return DatasetSpec(category=category, n_train=3, n_test_good=2, n_test_defect=2, size=SMALL, seed=seed)


def _defective(category: str, defect: str, seed: int, size: tuple[int, int]) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    good = make_good(category, rng, size)
    image, mask = add_defect(good, defect, rng, kind=CATEGORIES[category])
    return good, image, mask


# ------------------------------------------------------------------ vocabulary


def test_both_kinds_exist_with_at_least_three_defect_types() -> None:
    assert set(CATEGORIES.values()) == {"texture", "object"}
    for kind in CATEGORIES.values():
        assert len(DEFECT_TYPES[kind]) >= 3
        assert len(set(DEFECT_TYPES[kind])) == len(DEFECT_TYPES[kind])


# ------------------------------------------------------------------ good images


@pytest.mark.parametrize("name", [*CATEGORIES, "texture", "object"])
@pytest.mark.parametrize("size", [SMALL, (240, 320)])
def test_make_good_is_bgr_uint8_of_requested_size(name: str, size: tuple[int, int]) -> None:
    image = make_good(name, np.random.default_rng(0), size)
    assert image.shape == (*size, 3)
    assert image.dtype == np.uint8
    assert image.std() > 5  # a structured scene, not a flat fill


@pytest.mark.parametrize("category", CATEGORIES)
def test_good_images_vary_but_stay_alike(category: str) -> None:
    rng = np.random.default_rng(1)
    first, second = make_good(category, rng, (96, 128)), make_good(category, rng, (96, 128))
    assert not np.array_equal(first, second)
    assert abs(float(first.mean()) - float(second.mean())) < 20


@pytest.mark.parametrize("category", CATEGORIES)
def test_make_good_depends_only_on_the_generator_state(category: str) -> None:
    a = make_good(category, np.random.default_rng(5), SMALL)
    b = make_good(category, np.random.default_rng(5), SMALL)
    assert np.array_equal(a, b)


def test_make_good_rejects_unknown_names_and_tiny_sizes() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        make_good("carpet-of-doom", rng, SMALL)
    with pytest.raises(ValueError):
        make_good("tiles", rng, (8, 8))


# ------------------------------------------------------------------ defects


@pytest.mark.parametrize(("category", "defect"), CASES)
@pytest.mark.parametrize("size", [(96, 128), (128, 96)])
def test_defect_mask_is_exactly_the_changed_region(category: str, defect: str, size: tuple[int, int]) -> None:
    good, image, mask = _defective(category, defect, 3, size)
    assert image.shape == good.shape and image.dtype == np.uint8
    assert mask.shape == size and mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 255}
    inside = mask > 0
    assert synthetic.MIN_DEFECT_FRACTION <= inside.mean() <= synthetic.MAX_DEFECT_FRACTION
    diff = np.abs(image.astype(np.int16) - good.astype(np.int16)).max(axis=2)
    assert not diff[~inside].any(), "pixels outside the mask changed"
    assert (diff[inside] > 5).mean() > 0.6, "most masked pixels must really change"
    assert diff[inside].mean() > 15, "defect must be visible"


@pytest.mark.parametrize(("category", "defect"), CASES)
def test_defects_hold_across_seeds(category: str, defect: str) -> None:
    for seed in range(4):
        good, image, mask = _defective(category, defect, seed, SMALL)
        diff = np.abs(image.astype(np.int16) - good.astype(np.int16)).max(axis=2)
        assert mask.any()
        assert not diff[mask == 0].any()


def test_add_defect_leaves_its_input_alone() -> None:
    rng = np.random.default_rng(0)
    good = make_good("tiles", rng, SMALL)
    before = good.copy()
    add_defect(good, "spot", rng)
    assert np.array_equal(good, before)


@pytest.mark.parametrize("defect", [d for d in DEFECT_TYPES["object"] if d != "missing"])
def test_object_defects_sit_on_the_part(defect: str) -> None:
    good, _, mask = _defective("washer", defect, 2, (96, 128))
    background = np.median(good[:2].reshape(-1, 3), axis=0)
    on_part = np.abs(good.astype(np.float32) - background).max(axis=2) > 25
    assert on_part[mask > 0].mean() > 0.95


def test_missing_material_shows_the_background() -> None:
    good, image, mask = _defective("washer", "missing", 4, (128, 128))
    background = float(np.median(good[:2]))
    inside = mask > 0
    assert np.median(good[inside]) > background + 30  # it was metal ...
    assert abs(float(np.median(image[inside])) - background) < 10  # ... and now it is belt


def test_add_defect_rejects_bad_arguments() -> None:
    rng = np.random.default_rng(0)
    texture = make_good("tiles", rng, SMALL)
    with pytest.raises(ValueError):
        add_defect(texture, "no-such-defect", rng)
    with pytest.raises(ValueError):
        add_defect(texture, "missing", rng, kind="texture")
    with pytest.raises(ValueError):
        add_defect(texture.astype(np.float32), "spot", rng)
    with pytest.raises(ValueError):
        add_defect(texture[..., 0], "spot", rng)
    with pytest.raises(ValueError):
        add_defect(texture[:16, :16], "spot", rng)


# ------------------------------------------------------------------ datasets


@pytest.mark.parametrize("category", CATEGORIES)
def test_generate_dataset_writes_mvtec_layout(tmp_path: Path, category: str) -> None:
    spec = _small_spec(category)
    base = generate_dataset(tmp_path, spec)
    assert base == tmp_path / category
    defects = DEFECT_TYPES[CATEGORIES[category]]
    expected = {f"train/good/{i:03d}.png" for i in range(3)} | {f"test/good/{i:03d}.png" for i in range(2)}
    for defect in defects:
        expected |= {f"test/{defect}/{i:03d}.png" for i in range(2)}
        expected |= {f"ground_truth/{defect}/{i:03d}_mask.png" for i in range(2)}
    assert set(_tree(base)) == expected

    for name in expected:
        array = _read(base / name)
        if name.startswith("ground_truth/"):
            assert array.shape == SMALL and array.dtype == np.uint8
            assert set(np.unique(array)) == {0, 255}
        else:
            assert array.shape == (*SMALL, 3) and array.dtype == np.uint8


def test_dataset_masks_match_their_images(tmp_path: Path) -> None:
    base = generate_dataset(tmp_path, _small_spec("washer"))
    for image_path in sorted((base / "test").glob("*/*.png")):
        defect = image_path.parent.name
        mask_path = base / "ground_truth" / defect / f"{image_path.stem}_mask.png"
        assert mask_path.exists() == (defect != "good")
        if defect != "good":
            assert _read(mask_path).shape == _read(image_path).shape[:2]


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    first = _tree(generate_dataset(tmp_path / "a", _small_spec("tiles", seed=7)))
    second = _tree(generate_dataset(tmp_path / "b", _small_spec("tiles", seed=7)))
    assert first == second


def test_different_seeds_give_different_images(tmp_path: Path) -> None:
    first = _tree(generate_dataset(tmp_path / "a", _small_spec("fabric", seed=1)))
    second = _tree(generate_dataset(tmp_path / "b", _small_spec("fabric", seed=2)))
    assert first.keys() == second.keys()
    images = [name for name in first if not name.startswith("ground_truth/")]
    assert all(first[name] != second[name] for name in images)


def test_images_in_a_dataset_are_not_repeated(tmp_path: Path) -> None:
    tree = _tree(generate_dataset(tmp_path, _small_spec("washer")))
    images = [data for name, data in tree.items() if not name.startswith("ground_truth/")]
    assert len(set(images)) == len(images)


def test_dataset_spec_validates() -> None:
    with pytest.raises(ValueError):
        DatasetSpec(category="nope")
    with pytest.raises(ValueError):
        DatasetSpec(n_train=-1)
    with pytest.raises(ValueError):
        DatasetSpec(size=(16, 256))
    with pytest.raises(ValueError):
        DatasetSpec(seed=-3)
    assert DatasetSpec(size=[240, 320]).size == (240, 320)  # type: ignore[arg-type]


# ------------------------------------------------------------------ flat folder


def test_generate_images_writes_a_flat_folder(tmp_path: Path) -> None:
    paths = generate_images(tmp_path, n_good=2, n_defect=5, category="washer", size=SMALL, seed=3)
    defects = DEFECT_TYPES["object"]
    expected = ["good_000.png", "good_001.png"] + [f"{defects[i % len(defects)]}_{i:03d}.png" for i in range(5)]
    assert [p.name for p in paths] == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(expected)
    assert all(_read(p).shape == (*SMALL, 3) for p in paths)
    again = generate_images(tmp_path / "again", n_good=2, n_defect=5, category="washer", size=SMALL, seed=3)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]


# ------------------------------------------------------------------ command line


def test_main_writes_the_requested_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(tmp_path), "--category", "washer", "--size", "40", "56", "--seed", "4"]
    argv += ["--n-train", "2", "--n-test-good", "1", "--n-test-defect", "1"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "washer")
    assert [p.name for p in tmp_path.iterdir()] == ["washer"]
    files = _tree(tmp_path / "washer")
    assert len(files) == 2 + 1 + 2 * len(DEFECT_TYPES["object"])
    assert _read(tmp_path / "washer/train/good/001.png").shape == (40, 56, 3)
    assert files == _tree(generate_dataset(tmp_path / "api", DatasetSpec("washer", 2, 1, 1, (40, 56), 4)))


def test_main_defaults_to_every_category(tmp_path: Path) -> None:
    argv = [str(tmp_path), "--size", "32", "32", "--n-train", "1", "--n-test-good", "0", "--n-test-defect", "0"]
    assert main(argv) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(CATEGORIES)


@pytest.mark.parametrize("bad", [["--size", "8", "8"], ["--category", "nope"], ["--n-train", "-1"]])
def test_main_rejects_bad_arguments(tmp_path: Path, bad: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path), *bad])
    assert exc.value.code == 2
    assert not any(tmp_path.iterdir())


def test_module_runs_as_a_script(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "inspectd.synthetic", str(tmp_path), "--category", "tiles", "--size", "32", "48"]
    cmd += ["--n-train", "1", "--n-test-good", "0", "--n-test-defect", "0"]
    subprocess.run(cmd, check=True, cwd=REPO, env=env, capture_output=True, timeout=60)
    assert (tmp_path / "tiles/train/good/000.png").is_file()
