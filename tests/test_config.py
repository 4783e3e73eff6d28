"""Configuration: lookup order, validation, path resolution, per-product overrides."""

from __future__ import annotations

import json

import dataclasses
from pathlib import Path

import pytest

from inspectd import config as config_module
from inspectd.config import Config, ProductSettings, find_config_file, load_config, parse_config
from inspectd.errors import ConfigError, InspectdError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No $INSPECTD_CONFIG, an empty working folder and no system file."""
    monkeypatch.delenv("INSPECTD_CONFIG", raising=False)
    monkeypatch.setattr(config_module, "SYSTEM_CONFIG", tmp_path / "etc" / "inspectd" / "config.toml")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return tmp_path


def _file(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ lookup order


def test_no_file_gives_builtin_defaults(isolated: Path) -> None:
    assert find_config_file(None) is None
    config = load_config()
    assert config == Config()
    assert config.source is None
    assert config.defaults == ProductSettings()


def test_cwd_config_is_found(isolated: Path) -> None:
    _file(Path("config.toml"), 'log_level = "DEBUG"\n')
    assert find_config_file(None) == Path("config.toml")
    assert load_config().log_level == "DEBUG"


def test_env_beats_cwd(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _file(Path("config.toml"), 'log_level = "DEBUG"\n')
    env_file = _file(isolated / "env.toml", 'log_level = "ERROR"\n')
    monkeypatch.setenv("INSPECTD_CONFIG", str(env_file))
    assert find_config_file(None) == env_file
    assert load_config().log_level == "ERROR"


def test_explicit_beats_env_and_cwd(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _file(Path("config.toml"), 'log_level = "DEBUG"\n')
    monkeypatch.setenv("INSPECTD_CONFIG", str(_file(isolated / "env.toml", 'log_level = "ERROR"\n')))
    explicit = _file(isolated / "explicit.toml", 'log_level = "WARNING"\n')
    assert load_config(explicit).log_level == "WARNING"
    assert load_config(str(explicit)).source == explicit


def test_system_file_is_last_resort(isolated: Path) -> None:
    _file(config_module.SYSTEM_CONFIG, 'log_level = "ERROR"\n')
    assert load_config().log_level == "ERROR"
    _file(Path("config.toml"), 'log_level = "DEBUG"\n')
    assert load_config().log_level == "DEBUG"


def test_missing_explicit_or_env_file_is_an_error(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="nope.toml"):
        load_config(isolated / "nope.toml")
    monkeypatch.setenv("INSPECTD_CONFIG", str(isolated / "gone.toml"))
    with pytest.raises(ConfigError, match=r"gone\.toml.*INSPECTD_CONFIG"):
        load_config()


def test_invalid_toml_names_the_file(isolated: Path) -> None:
    bad = _file(isolated / "bad.toml", "store_dir = [unclosed\n")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_config(bad)


# ------------------------------------------------------------------ unknown keys


@pytest.mark.parametrize("text, key", [
    ("colour = 'red'\n", "'colour'"),
    ("[defaults]\nbackbone = 'resnet18'\nsizee = 64\n", "'defaults.sizee'"),
    ("[products.bolt]\nsize = 64\nthreshhold = 2\n", "'products.bolt.threshhold'"),
    ("[[watch]]\npath = '/in'\nproduct = 'bolt'\nrecursiv = true\n", "'watch[0].recursiv'"),
    ("[[watch]]\npath = '/a'\nproduct = 'a'\n[[watch]]\npath = '/b'\nproduct = 'b'\nfoo = 1\n", "'watch[1].foo'"),
    ("[daemon]\nsettle_second = 2\n", "'daemon.settle_second'"),
    ("[review]\npagesize = 50\n", "'review.pagesize'"),
    ("[images]\nmax_mb = 5\n", "'images.max_mb'"),
    ("source = '/x'\n", "'source'"),  # an internal field, not a key of the file
])
def test_unknown_keys_are_rejected_with_their_name(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match="unknown configuration key " + key.replace("[", r"\[").replace("]", r"\]")):
        load_config(_file(tmp_path / "c.toml", text))


# ------------------------------------------------------------ bad values / types


@pytest.mark.parametrize("text, key, why", [
    ("device = 'gpu'\n", "device", "must be"),
    ("log_level = 'TRACE'\n", "log_level", "must be one of"),
    ("store_dir = 5\n", "store_dir", "path"),
    ("store_dir = ''\n", "store_dir", "path"),
    ("[defaults]\nsize = 'big'\n", "defaults.size", "integer"),
    ("[defaults]\nsize = 16\n", "defaults.size", "at least 32"),
    ("[defaults]\nsize = true\n", "defaults.size", "integer"),
    ("[defaults]\nbackbone = 'vgg16'\n", "defaults.backbone", "must be one of"),
    ("[defaults]\nlayers = 'layer2'\n", "defaults.layers", "array"),
    ("[defaults]\nlayers = ['layer2', 'layer9']\n", "defaults.layers", "layer9"),
    ("[defaults]\nlayers = []\n", "defaults.layers", "at least one"),
    ("[defaults]\ncoreset_ratio = 0\n", "defaults.coreset_ratio", "(0, 1]"),
    ("[defaults]\ncoreset_ratio = 'ten'\n", "defaults.coreset_ratio", "number"),
    ("[defaults]\nfalse_alarm_rate = 1.5\n", "defaults.false_alarm_rate", "(0, 1)"),
    ("[defaults]\ncalibration_fraction = 1\n", "defaults.calibration_fraction", "[0, 1)"),
    ("[defaults]\ncalibration_folds = 1\n", "defaults.calibration_folds", "0 or >= 2"),
    ("[defaults]\ntile = 16\n", "defaults.tile", "at least 32"),
    ("[defaults]\ntile = 64\ntile_overlap = 64\n", "defaults.tile_overlap", "[0, tile)"),
    ("[defaults]\ntile_bank = 'mixed'\n", "defaults.tile_bank", "must be one of"),
    ("[defaults]\nthreshold_mode = 'magic'\n", "defaults.threshold_mode", "must be one of"),
    ("[defaults]\ncenter_crop = 500\n", "defaults.center_crop", "(0, size]"),
    ("[defaults]\nroi = [0, 0, 0, 10]\n", "defaults.roi", "positive"),
    ("[defaults]\nroi = [0, 0, 10]\n", "defaults.roi", "positive"),
    ("[defaults]\nblur_sigma = -1\n", "defaults.blur_sigma", ">= 0"),
    ("[products.bolt]\nsize = 8\n", "products.bolt.size", "at least 32"),
    ("[products.bolt]\nresize = 'stretch'\n", "products.bolt.resize", "must be one of"),
    ("defaults = 3\n", "defaults", "table"),
    ("products = 3\n", "products", "table"),
    ("[products]\nbolt = 3\n", "products.bolt", "table"),
    ("watch = 3\n", "watch", "array"),
    ("[[watch]]\npath = '/in'\nproduct = 'bolt'\nafter_scoring = 'move'\n", "watch[0].archive_dir", "required"),
    ("[[watch]]\npath = '/in'\nproduct = 'bolt'\nrecursive = 'yes'\n", "watch[0].recursive", "true or false"),
    ("[[watch]]\npath = '/in'\nproduct = 'bolt'\ninclude = '*.png'\n", "watch[0].include", "array"),
    ("[daemon]\nbatch_size = 0\n", "daemon.batch_size", ">= 1"),
    ("[daemon]\npoll_seconds = 'fast'\n", "daemon.poll_seconds", "number"),
    ("[review]\npage_size = 5\n", "review.page_size", ">= 10"),
    ("[images]\nmax_pixels = 0\n", "images.max_pixels", "> 0"),
])
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_file(tmp_path / "c.toml", text))
    message = str(info.value)
    assert f"'{key}'" in message
    assert why in message


# ----------------------------------------------------------------- product names


@pytest.mark.parametrize("name", ["a/b", "..", "a..b", ".hidden", "-x", "x" * 65, "sp ace", ""])
def test_bad_product_section_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="invalid product name") as info:
        load_config(_file(tmp_path / "c.toml", f'[products."{name}"]\nsize = 64\n'))
    assert f"'products.{name}'" in str(info.value)


@pytest.mark.parametrize("name", ["../etc", "a/b", "a..b"])
def test_bad_watch_product_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=r"'watch\[0\]\.product' invalid product name"):
        load_config(_file(tmp_path / "c.toml", f"[[watch]]\npath = '/in'\nproduct = '{name}'\n"))


@pytest.mark.parametrize("name", ["washer\n", "washer\r", "wa\u200bsher", "washer\u00a0", "w\u00e4sher", "\ttab"])
def test_control_and_invisible_characters_in_product_names_are_refused_with_the_rule(name: str) -> None:
    from inspectd.errors import ProductNameError
    from inspectd.naming import PRODUCT_RULE, validate_product_name

    with pytest.raises(ProductNameError) as info:
        validate_product_name(name)
    assert PRODUCT_RULE in str(info.value) and repr(name) in str(info.value)


def test_a_trailing_newline_in_a_product_name_from_the_cli_is_refused(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "good").mkdir()
    done = subprocess.run([sys.executable, "-m", "inspectd.cli", "--config",
                           str(_file(tmp_path / "c.toml", f"store_dir = '{tmp_path}'\n")), "enroll", "--product",
                           "washer\n", str(tmp_path / "good")],
                          capture_output=True, text=True)
    assert done.returncode in (1, 2) and "invalid product name 'washer\\n'" in done.stderr


@pytest.mark.parametrize(("station", "why"), [("cam1\n", "U+000A"), ("cam\u200b1", "U+200B"), (" cam1", "white space"),
                                              ("c" * 129, "longer than 128")])
def test_station_names_with_control_or_invisible_characters_are_refused(tmp_path: Path, station: str,
                                                                        why: str) -> None:
    text = f"[[watch]]\npath = '/in'\nproduct = 'bolt'\nstation = {json.dumps(station)}\n"
    with pytest.raises(ConfigError, match=r"'watch\[0\]\.station'") as info:
        load_config(_file(tmp_path / "c.toml", text))
    assert why in str(info.value)


def test_good_product_names_are_accepted(tmp_path: Path) -> None:
    text = "".join(f'[products."{n}"]\nsize = 64\n' for n in ("bolt", "Part-7", "a.b_c", "9"))
    assert sorted(load_config(_file(tmp_path / "c.toml", text)).products) == ["9", "Part-7", "a.b_c", "bolt"]


# -------------------------------------------------------------------------- paths


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "etc" / "inspectd"
    path = _file(folder / "config.toml", (
        "store_dir = 'models'\nresults_dir = '../results'\nenroll_dir = '/abs/enroll'\n"
        "[defaults]\nweights = 'weights/wrn50.pth'\n"
        "[products.bolt]\nweights = 'bolt.pth'\n"
        "[products.nut]\nsize = 64\n"
        "[[watch]]\npath = 'drop'\nproduct = 'bolt'\nafter_scoring = 'move'\narchive_dir = 'archive'\n"))
    monkeypatch.chdir(tmp_path)  # the working folder must not matter
    config = load_config(path.relative_to(tmp_path))
    base = folder.resolve()
    assert config.store_dir == base / "models"
    assert config.results_dir == base / ".." / "results"
    assert config.enroll_dir == Path("/abs/enroll")
    assert config.defaults.weights == str(base / "weights" / "wrn50.pth")
    assert config.product("bolt").weights == str(base / "bolt.pth")
    assert config.product("nut").weights == str(base / "weights" / "wrn50.pth")
    assert config.watch[0].path == base / "drop"
    assert config.watch[0].archive_dir == base / "archive"


def test_weights_keywords_are_not_paths(tmp_path: Path) -> None:
    config = load_config(_file(tmp_path / "c.toml", "[defaults]\nweights = 'random'\n[products.a]\nweights = 'imagenet'\n"))
    assert config.defaults.weights == "random"
    assert config.product("a").weights == "imagenet"


# ---------------------------------------------------------------------- overrides


def test_products_inherit_defaults_and_override(tmp_path: Path) -> None:
    config = load_config(_file(tmp_path / "c.toml", (
        "[defaults]\nbackbone = 'resnet18'\nsize = 128\nfalse_alarm_rate = 0.05\nlayers = ['layer1', 'layer2']\n"
        "[products.bolt]\nsize = 64\nroi = [1, 2, 30, 40]\n")))
    bolt, other = config.product("bolt"), config.product("not-configured")
    assert bolt.size == 64 and bolt.roi == (1, 2, 30, 40)
    assert bolt.backbone == "resnet18" and bolt.false_alarm_rate == 0.05 and bolt.layers == ("layer1", "layer2")
    assert other is config.defaults and other.size == 128
    # Everything not named keeps the built-in default.
    assert bolt.coreset_ratio == ProductSettings().coreset_ratio
    assert dataclasses.replace(bolt, size=128, roi=None) == config.defaults


def test_types_are_converted(tmp_path: Path) -> None:
    config = load_config(_file(tmp_path / "c.toml", (
        "[defaults]\ncoreset_ratio = 1\nlayers = ['layer2']\ncenter_crop = 200\n"
        "[daemon]\nsettle_seconds = 2\n[[watch]]\npath = '/in'\nproduct = 'a'\ninclude = ['*.png']\n")))
    assert isinstance(config.defaults.coreset_ratio, float)
    assert config.defaults.layers == ("layer2",) and config.defaults.center_crop == 200
    assert isinstance(config.daemon.settle_seconds, float)
    assert config.watch[0].include == ("*.png",)


def test_parse_config_without_file_uses_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_config({"store_dir": "m"}).store_dir == tmp_path / "m"


def test_config_errors_are_inspectd_errors() -> None:
    assert issubclass(ConfigError, InspectdError)


def test_repository_example_config_parses() -> None:
    example = REPO / "config.toml"
    if not example.is_file():
        pytest.skip("no config.toml example at the repository root yet")
    config = load_config(example)
    assert config.source == example
    for name in config.products:
        config.product(name)
