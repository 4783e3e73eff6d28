"""Versioned, atomic, checksummed model store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inspectd.errors import InspectdError, ModelError, ProductNameError
from inspectd.store import FORMAT_VERSION, ModelStore


def arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"bank": rng.normal(size=(50, 16)).astype(np.float32),
            "calibration": rng.normal(size=(3, 4, 4, 16)).astype(np.float16)}


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


def test_versions_increase_and_earlier_ones_are_kept(store: ModelStore) -> None:
    assert store.products() == [] and store.versions("bolt") == [] and store.latest_version("bolt") is None
    first = store.write("bolt", {"note": "first"}, arrays(1))
    second = store.write("bolt", {"note": "second"}, arrays(2))
    assert (first.version, second.version) == ("v0001", "v0002")
    assert store.versions("bolt") == ["v0001", "v0002"] and store.latest_version("bolt") == "v0002"
    assert store.products() == ["bolt"]
    assert store.open("bolt").metadata["note"] == "second"
    old = store.open("bolt", "v0001")
    assert old.metadata["note"] == "first"
    np.testing.assert_array_equal(old.array("bank"), arrays(1)["bank"])
    np.testing.assert_array_equal(store.open("bolt").array("calibration"), arrays(2)["calibration"])
    assert store.open("bolt").array("calibration").dtype == np.float16


def test_metadata_records_files(store: ModelStore) -> None:
    stored = store.write("bolt", {"a": 1}, arrays())
    meta = json.loads((stored.path / "model.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION and meta["product"] == "bolt" and meta["version"] == "v0001"
    assert meta["files"]["bank"]["shape"] == [50, 16] and meta["files"]["bank"]["dtype"] == "float32"
    assert len(meta["files"]["bank"]["sha256"]) == 64
    assert sorted(p.name for p in stored.path.iterdir()) == ["SHA256SUMS", "bank.npy", "calibration.npy",
                                                             "model.json"]


def test_version_numbers_sort_numerically(store: ModelStore) -> None:
    for version in ("v0009", "v0010", "v0002"):
        (store.root / "bolt" / version).mkdir(parents=True)
    (store.root / "bolt" / ".staging-x").mkdir()
    (store.root / "bolt" / "notes").mkdir()
    assert store.versions("bolt") == ["v0002", "v0009", "v0010"]
    assert store.write("bolt", {}, arrays()).version == "v0011"


def test_crash_during_write_leaves_nothing(store: ModelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.write("bolt", {}, arrays())
    real_save, calls = np.save, []

    def failing_save(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(ModelError, match="cannot write model bolt.*No space.*no new version"):
        store.write("bolt", {}, arrays())
    assert len(calls) == 2
    assert store.versions("bolt") == ["v0001"]
    leftovers = sorted(p.name for p in (store.root / "bolt").iterdir())
    assert leftovers == [".lock", "v0001"]  # no staging folder, no partial file
    monkeypatch.setattr(np, "save", real_save)
    assert store.write("bolt", {}, arrays()).version == "v0002"


def test_crash_during_first_write_leaves_no_version(store: ModelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_save(*args, **kwargs):
        raise KeyboardInterrupt  # even an interrupt cleans up

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        store.write("nut", {}, arrays())
    assert store.versions("nut") == [] and store.products() == []
    assert [p for p in (store.root / "nut").rglob("*") if p.name != ".lock"] == []
    with pytest.raises(ModelError, match="no model for product 'nut'"):
        store.open("nut")


# ------------------------------------------------------------------ bad models


@pytest.fixture
def written(store: ModelStore):
    return store.write("bolt", {"a": 1}, arrays())


def _expect_error(store: ModelStore, pattern: str, name: str = "bank", mmap: bool = False) -> str:
    with pytest.raises(ModelError, match=pattern) as info:
        store.open("bolt").array(name, mmap=mmap)
    message = str(info.value)
    assert "bolt" in message and "v0001" in message
    return message


def test_missing_array_file(store: ModelStore, written) -> None:
    (written.path / "bank.npy").unlink()
    assert "bank.npy" in _expect_error(store, "incomplete")


def test_unrecorded_array(store: ModelStore, written) -> None:
    _expect_error(store, "no array 'features'", name="features")


def test_corrupted_bank_fails_checksum(store: ModelStore, written) -> None:
    path = written.path / "bank.npy"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # one float's bits: still a valid .npy
    path.write_bytes(bytes(data))
    assert np.load(path).shape == (50, 16)
    assert "checksum" in _expect_error(store, "corrupt")


def _rewrite_recorded_sha(stored, name: str) -> None:
    """Make the checksum match a damaged file, to reach the checks behind it."""
    from inspectd.hashing import file_sha256

    meta_path = stored.path / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["files"][name]["sha256"] = file_sha256(stored.path / meta["files"][name]["file"])
    meta_path.write_text(json.dumps(meta))
    _reseal(stored)


def _reseal(stored) -> None:
    """Rewrite SHA256SUMS for the files as they are now (what only a deliberate repair does)."""
    from inspectd.hashing import file_sha256

    names = [line.split("  ", 1)[1] for line in (stored.path / "SHA256SUMS").read_text().splitlines()]
    (stored.path / "SHA256SUMS").write_text("".join(f"{file_sha256(stored.path / n)}  {n}\n" for n in names))


def test_an_edited_model_json_is_refused(store: ModelStore, written) -> None:
    meta_path = written.path / "model.json"
    meta_path.write_text(meta_path.read_text().replace('"a": 1', '"a": 99'))
    with pytest.raises(ModelError, match="bolt v0001 is corrupt or was edited: model.json fails its checksum"):
        store.open("bolt")


def test_every_file_is_listed_in_sha256sums_in_sha256sum_format(store: ModelStore, written) -> None:
    import subprocess

    listed = sorted(line.split("  ", 1)[1] for line in (written.path / "SHA256SUMS").read_text().splitlines())
    assert listed == ["bank.npy", "calibration.npy", "model.json"]
    assert subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=written.path).returncode == 0


def test_a_format_1_model_without_checksums_loads_with_a_warning(store: ModelStore, written,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    (written.path / "SHA256SUMS").unlink()
    meta_path = written.path / "model.json"
    meta_path.write_text(meta_path.read_text().replace('"format_version": 2', '"format_version": 1'))
    with caplog.at_level("WARNING"):
        assert store.open("bolt").array("bank").shape == (50, 16)
    assert "not covered by a checksum" in caplog.text


def test_a_format_2_model_without_checksums_is_refused(store: ModelStore, written) -> None:
    (written.path / "SHA256SUMS").unlink()
    with pytest.raises(ModelError, match="unsupported model format 2 \\(SHA256SUMS is missing\\)"):
        store.open("bolt")


def test_truncated_npy(store: ModelStore, written) -> None:
    path = written.path / "bank.npy"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _expect_error(store, "checksum")
    _expect_error(store, "corrupt", mmap=True)  # memory-mapped: no checksum, still refused
    _rewrite_recorded_sha(written, "bank")
    _expect_error(store, "corrupt")


def test_wrong_shape_or_dtype_refused(store: ModelStore, written) -> None:
    np.save(written.path / "bank.npy", np.zeros((50, 16), np.float64))
    _rewrite_recorded_sha(written, "bank")
    assert "float64" in _expect_error(store, "expected")


def test_object_array_is_never_unpickled(store: ModelStore, written, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    evil = np.empty(2, dtype=object)
    evil[0], evil[1] = {"x": 1}, _Payload(str(marker))
    np.save(written.path / "bank.npy", evil, allow_pickle=True)
    _rewrite_recorded_sha(written, "bank")
    _expect_error(store, "corrupt")
    _expect_error(store, "corrupt", mmap=True)
    assert not marker.exists()


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.makedirs, (self.marker,))


@pytest.mark.parametrize("text, pattern", [
    (b"{not json", "corrupt: model.json"),
    (b"[1, 2]", "unsupported model format"),
    (b'{"format_version": 99}', "unsupported model format 99"),
    (b'{"no_version": true}', "unsupported model format None"),
    (b"\xff\xfe\x00garbage", "corrupt"),  # not UTF-8
    (b"", "corrupt"),
])
def test_bad_model_json(store: ModelStore, written, text: bytes, pattern: str) -> None:
    (written.path / "model.json").write_bytes(text)
    _reseal(written)
    with pytest.raises(ModelError, match=pattern) as info:
        store.open("bolt")
    assert "bolt" in str(info.value) and "v0001" in str(info.value)


def test_missing_model_json(store: ModelStore, written) -> None:
    (written.path / "model.json").unlink()
    with pytest.raises(ModelError, match="v0001.*incomplete"):
        store.open("bolt")


def test_missing_product_or_version(store: ModelStore, written) -> None:
    with pytest.raises(ModelError, match="no model for product 'washer'.*enroll"):
        store.open("washer")
    with pytest.raises(ModelError, match="v0007"):
        store.open("bolt", "v0007")


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", "", ".hidden", "a" * 65, "x\\y"])
def test_invalid_product_names_refused(store: ModelStore, name: str) -> None:
    with pytest.raises(ProductNameError, match="invalid product name"):
        store.write(name, {}, arrays())
    with pytest.raises(ProductNameError):
        store.open(name)
    with pytest.raises(ProductNameError):
        store.versions(name)
    assert issubclass(ProductNameError, InspectdError)
    assert not (store.root.parent / "evil").exists()


def test_lock_is_exclusive_per_product(store: ModelStore) -> None:
    import fcntl

    with store.lock("bolt"):
        with open(store.root / "bolt" / ".lock") as other:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(store.root / "bolt" / ".lock") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released
