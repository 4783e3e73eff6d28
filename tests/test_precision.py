"""Precision: which one `auto` picks (CPUs with and without bf16 simulated), what the
model records, and the fallback message when scoring cannot use it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from inspectd import precision
from inspectd.enroll import enroll
from inspectd.model import ProductModel
from inspectd.precision import PrecisionChoice, bf16_features_of, cpu_flags, resolve_precision, scoring_precision
from inspectd.store import ModelStore

from engine_support import restore_logging, run  # noqa: F401  (autouse fixture)

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
AMX = ("amx_bf16", "avx512_bf16")


@pytest.fixture
def cpu_without_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_bf16_features", lambda: ())


@pytest.fixture
def cpu_with_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_bf16_features", lambda: AMX)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some Xeon with bf16 in its name\n"
                       "flags\t\t: fpu sse2 avx512f avx512_bf16 amx_tile amx_bf16\n\n", encoding="ascii")
    assert bf16_features_of(cpu_flags(cpuinfo)) == ("amx_bf16", "avx512_bf16")
    cpuinfo.write_text("model name\t: Xeon bf16\nflags\t\t: fpu sse2 avx2 avx512f\n", encoding="ascii")
    assert bf16_features_of(cpu_flags(cpuinfo)) == ()  # never guessed from the name
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_torch_capability_is_the_fallback_detection() -> None:
    assert bf16_features_of(set(), "AVX512_BF16") == ("avx512_bf16",)
    assert bf16_features_of(set(), "AVX512") == ()


@pytest.mark.parametrize("features, device, expected", [
    (AMX, CPU, "bf16"),
    (("avx512_bf16",), CPU, "bf16"),
    ((), CPU, "fp32"),
    ((), CUDA, "fp16"),
])
def test_auto_picks_what_the_device_runs(features: tuple[str, ...], device: torch.device, expected: str) -> None:
    assert resolve_precision("auto", device, features) == PrecisionChoice(expected)


def test_asking_for_what_the_cpu_lacks_falls_back_with_a_reason() -> None:
    choice = resolve_precision("bf16", CPU, ())
    assert choice.precision == "fp32" and "no native bf16" in choice.fallback
    assert resolve_precision("fp16", CPU, AMX).precision == "fp32"
    assert scoring_precision("bf16", CPU, AMX) == PrecisionChoice("bf16")
    assert scoring_precision("fp32", CPU, ()) == PrecisionChoice("fp32")
    with pytest.raises(ValueError):
        resolve_precision("int8", CPU, AMX)


def enrolled_model(make_config, dataset: Path, precision_setting: str, tolerance: float = 1.0, **settings
                   ) -> tuple[Path, ModelStore]:
    """Enrolled with a tolerance that every bf16 check passes, unless told otherwise."""
    path, config = make_config(defaults={"precision": precision_setting, "precision_tolerance": tolerance,
                                         **settings})
    enroll(config, "p", dataset / "train" / "good")
    return path, ModelStore(config.store_dir)


def test_model_records_bf16_and_scores_in_it(make_config, dataset: Path, cpu_with_bf16) -> None:
    _, store = enrolled_model(make_config, dataset, "auto")
    meta = store.open("p").metadata
    assert meta["precision"]["enrolled"] == "bf16" and meta["precision"]["requested"] == "auto"
    assert meta["settings"]["precision"] == "auto"
    check = meta["precision"]["bf16_check"]
    # every good image calibrates (cross-fitted); bf16 is checked on the 20 % share held-out calibration would use
    assert meta["calibration"]["n_good"] == 20
    assert check["passed"] and check["images"] == 4
    assert 0 < check["max_rel_diff"] < 0.2  # bf16 and fp32 differ, a little
    model = ProductModel.load(store, "p")
    assert model.precision == "bf16" and model.precision_choice.fallback == ""
    maps = model.extractor.backbone(model.extractor.to_tensor([model.read(p)[1] for p in
                                                               sorted((dataset / "test" / "good").glob("*.png"))[:1]]),
                                    model.precision)
    assert all(m.dtype == torch.bfloat16 for m in maps)


def test_auto_enrolls_fp32_when_bf16_scores_differ_too_much(make_config, dataset: Path, cpu_with_bf16,
                                                           caplog) -> None:
    with caplog.at_level(logging.WARNING):
        _, store = enrolled_model(make_config, dataset, "auto", tolerance=0.0)  # any difference is too much
    meta = store.open("p").metadata
    assert meta["precision"]["enrolled"] == "fp32"
    assert meta["precision"]["bf16_check"]["passed"] is False
    assert "enrolled in fp32" in meta["precision"]["note"]
    assert "p: bf16 image scores of 4 out-of-bank good images differ from fp32 by up to" in caplog.text
    assert "enrolled in fp32" in caplog.text
    assert store.versions("p") == [store.open("p").version]  # the rejected bf16 model was never written
    assert ProductModel.load(store, "p").precision == "fp32"


@pytest.fixture
def enrollment_spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, object]]:
    """(stage, precision of the features it worked on, the bank's rows for "final bank")
    for every feature extraction, greedy selection (final coreset, fold bank), final bank
    gathered and fold scored."""
    from inspectd import coreset as coreset_module, crossfit as crossfit_module, enroll as enroll_module
    calls: list[tuple[str, str, object]] = []
    precisions: list[str] = []

    def spy(module, name: str, stage: str, record=lambda *args: None):
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            if stage == "features":
                precisions.append(args[4])
            calls.append((stage, precisions[-1], record(*args)))
            return real(*args, **kwargs)
        monkeypatch.setattr(module, name, wrapper)

    spy(enroll_module, "extract", "features")
    spy(coreset_module.Coreset, "select", "coreset")
    spy(coreset_module.Coreset, "narrowed", "fold bank")
    spy(crossfit_module, "score_folds", "fold scores")
    spy(enroll_module, "bank_of", "final bank", lambda pool, indices: np.sort(indices).tolist())
    return calls


def test_a_rejected_bf16_is_found_before_the_long_work_and_its_selection_is_kept(
        make_config, dataset: Path, cpu_with_bf16, enrollment_spy: list) -> None:
    """The check runs on the fold banks, before any fold is scored; the fp32 enrollment
    that follows uses the coreset and fold banks the bf16 attempt chose (the same
    patches, now with fp32 features): a rejected bf16 costs its features and the check."""
    _, store = enrolled_model(make_config, dataset, "auto", tolerance=0.0)
    meta = store.open("p").metadata["precision"]
    assert meta["enrolled"] == "fp32" and meta["coreset_chosen_in"] == "bf16"
    stages = [(stage, used) for stage, used, _ in enrollment_spy]
    assert stages == ([("features", "bf16"), ("coreset", "bf16"), ("final bank", "bf16")] + [("fold bank", "bf16")] * 5
                      + [("features", "fp32"), ("final bank", "fp32"), ("fold scores", "fp32")])
    bf16_bank, fp32_bank = [rows for stage, _, rows in enrollment_spy if stage == "final bank"]
    assert fp32_bank == bf16_bank  # the same patches
    bank = np.load(store.open("p").path / "bank.npy")
    assert bank.shape[0] == len(fp32_bank) and ProductModel.load(store, "p").precision == "fp32"


def test_a_rejected_held_out_bf16_keeps_its_coreset(make_config, dataset: Path, cpu_with_bf16,
                                                    enrollment_spy: list) -> None:
    _, store = enrolled_model(make_config, dataset, "auto", tolerance=0.0, calibration_folds=0)
    assert store.open("p").metadata["precision"]["coreset_chosen_in"] == "bf16"
    assert [(stage, used) for stage, used, _ in enrollment_spy] == [
        ("features", "bf16"), ("coreset", "bf16"), ("final bank", "bf16"), ("features", "fp32"), ("final bank", "fp32")]
    assert enrollment_spy[2][2] == enrollment_spy[4][2]  # the same patches


def test_an_enrollment_chooses_its_own_coreset_unless_bf16_was_rejected(make_config, dataset: Path,
                                                                       cpu_with_bf16) -> None:
    for setting, chosen_in in (("auto", "bf16"), ("fp32", "fp32")):
        _, store = enrolled_model(make_config, dataset, setting)
        meta = store.open("p").metadata["precision"]
        assert meta["enrolled"] == meta["coreset_chosen_in"] == chosen_in


def test_kept_selections_are_forgotten_when_the_good_images_change() -> None:
    from inspectd.bank import Selections
    selections, chosen = Selections(), []

    def choose() -> np.ndarray:
        chosen.append(len(chosen))
        return np.array(chosen)

    first = selections.of_images(["a", "b"]).recall("final", choose)
    assert selections.of_images(["a", "b"]).recall("final", choose) is first and selections.reused
    assert chosen == [0]
    selections.of_images(["a", "c"])  # a file changed between the two enrollments
    assert not selections.reused
    assert selections.recall("final", choose) is not first and chosen == [0, 1] and not selections.reused


def test_held_out_calibration_checks_bf16_on_its_held_out_images(make_config, dataset: Path,
                                                                 cpu_with_bf16) -> None:
    _, store = enrolled_model(make_config, dataset, "auto", calibration_folds=0)
    meta = store.open("p").metadata
    check = meta["precision"]["bf16_check"]
    assert meta["precision"]["enrolled"] == "bf16"
    assert check["passed"] and check["images"] == meta["calibration"]["n_good"] == 4


def test_tiled_products_are_not_given_an_unchecked_bf16(make_config, dataset: Path, cpu_with_bf16) -> None:
    _, store = enrolled_model(make_config, dataset, "auto", tile=48, tile_overlap=8)
    meta = store.open("p").metadata["precision"]
    assert meta["enrolled"] == "fp32" and "not checked against fp32 for tiled products" in meta["note"]


def test_fp32_setting_is_kept_on_a_bf16_cpu(make_config, dataset: Path, cpu_with_bf16) -> None:
    _, store = enrolled_model(make_config, dataset, "fp32")
    assert store.open("p").metadata["precision"]["enrolled"] == "fp32"
    assert ProductModel.load(store, "p").precision == "fp32"


def test_scoring_on_a_cpu_without_bf16_says_it_falls_back(make_config, dataset: Path, monkeypatch, caplog,
                                                          capsys) -> None:
    monkeypatch.setattr(precision, "cpu_bf16_features", lambda: AMX)
    path, store = enrolled_model(make_config, dataset, "auto")
    monkeypatch.setattr(precision, "cpu_bf16_features", lambda: ())  # the model moves to another line PC
    with caplog.at_level(logging.WARNING):
        model = ProductModel.load(store, "p")
    assert model.precision == "fp32" and model.enrolled_precision == "bf16"
    assert "PRECISION FALLBACK" in caplog.text and "enrolled in bf16" in caplog.text
    assert model.describe()["precision_fallback"] == model.precision_choice.fallback
    code, out, _ = run(capsys, "--config", path, "products")
    assert code == 0
    assert "bf16 (scored fp32)" in out and "PRECISION FALLBACK p" in out


def test_adding_to_a_bf16_model_needs_bf16(make_config, dataset: Path, monkeypatch) -> None:
    monkeypatch.setattr(precision, "cpu_bf16_features", lambda: AMX)
    path, store = enrolled_model(make_config, dataset, "bf16")
    monkeypatch.setattr(precision, "cpu_bf16_features", lambda: ())
    from inspectd.config import load_config
    from inspectd.errors import InspectdError

    with pytest.raises(InspectdError, match="cannot --add"):
        enroll(load_config(path), "p", dataset / "test" / "good", add=True)


def test_daemon_and_status_show_the_fallback(make_config, dataset: Path, monkeypatch, capsys, tmp_path: Path) -> None:
    import os
    import time

    from inspectd.config import load_config
    from inspectd.daemon.models import ModelKeeper
    from inspectd.daemon.runtime import status_path, write_status

    monkeypatch.setattr(precision, "cpu_bf16_features", lambda: AMX)
    path, store = enrolled_model(make_config, dataset, "bf16")
    monkeypatch.setattr(precision, "cpu_bf16_features", lambda: ())
    keeper = ModelKeeper(store, lambda product: CPU, lambda model: None, lambda product: store.versions(product)[-1])
    assert keeper.get("p").precision == "fp32"
    fallbacks = keeper.precision_fallbacks()
    assert fallbacks["p"]["version"] == "v0001" and "enrolled in bf16" in fallbacks["p"]["note"]
    # `inspectd status` shows what the daemon reported
    runtime = tmp_path / "run"
    runtime.mkdir()
    path.write_text(path.read_text(encoding="utf-8") + f'\n[daemon]\nruntime_dir = "{runtime}"\n', encoding="utf-8")
    config = load_config(path)
    now = time.time()
    write_status(status_path(config), {"pid": os.getpid(), "state": "running", "started_at": now, "updated_at": now,
                                       "pauses": [], "precision_fallbacks": fallbacks})
    _, out, _ = run(capsys, "--config", path, "status")
    assert f"PRECISION FALLBACK p v0001: {fallbacks['p']['note']}" in out
