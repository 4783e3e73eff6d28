"""Versioned product models on disk.

    <store>/<product>/v0001/model.json            metadata (backbone, weights, geometry, ...)
                           bank.npy                memory bank, float32 (M, D)
                           calibration.npy         held-out good patch features, float16
    <store>/<product>/v0002/...

                           SHA256SUMS              sha256 of model.json and every array

Arrays are plain .npy files read with allow_pickle=False, so loading a model cannot
execute code. Each version is written into a temporary directory and renamed into
place, so a reader never sees half a model; earlier versions are kept. Every file of
a version is covered by a checksum: SHA256SUMS (the format of `sha256sum -c`) holds
model.json's, and model.json records every array's, so a corrupt, truncated or
edited file (a threshold changed by hand) is refused on load. Versions written
before SHA256SUMS existed (format 1) still load, with a warning that their
model.json is not covered.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import ModelError
from .filemodes import dir_mode
from .hashing import bytes_sha256, file_sha256
from .imageio import Geometry
from .naming import validate_product_name

METADATA_FILE = "model.json"
CHECKSUMS_FILE = "SHA256SUMS"
FORMAT_VERSION = 2
LEGACY_FORMAT = 1  # before SHA256SUMS
_VERSION_DIR = re.compile(r"^v(\d{4,})$")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredModel:
    """One version of a product model as found on disk."""

    product: str
    version: str
    path: Path
    metadata: dict

    def geometry(self) -> Geometry:
        """The frozen input geometry the model was enrolled with."""
        try:
            data = self.metadata["geometry"]
            return Geometry(resize=data["resize"], size=data["size"], center_crop=data["center_crop"],
                            roi=tuple(data["roi"]) if data["roi"] else None, resize_hw=tuple(data["resize_hw"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"model {self.product} {self.version}: geometry is missing or invalid ({exc})") from exc

    def array(self, name: str, mmap: bool = False) -> np.ndarray:
        """Load one recorded array, checking its checksum (skipped when memory-mapped)."""
        record = self.metadata.get("files", {}).get(name)
        if record is None:
            raise ModelError(f"model {self.product} {self.version}: no array {name!r} recorded")
        path = self.path / record["file"]
        if not path.is_file():
            raise ModelError(f"model {self.product} {self.version} is incomplete: {path.name} is missing")
        if not mmap and file_sha256(path) != record["sha256"]:
            raise ModelError(f"model {self.product} {self.version} is corrupt: {path.name} fails its checksum")
        try:
            array = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
        except (ValueError, OSError, EOFError) as exc:
            raise ModelError(f"model {self.product} {self.version} is corrupt: {path.name}: {exc}") from exc
        if list(array.shape) != record["shape"] or str(array.dtype) != record["dtype"]:
            raise ModelError(f"model {self.product} {self.version} is corrupt: {path.name} has shape "
                             f"{list(array.shape)} {array.dtype}, expected {record['shape']} {record['dtype']}")
        return array


class ModelStore:
    """The directory tree of product models."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def product_dir(self, product: str) -> Path:
        return self.root / validate_product_name(product)

    def products(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def versions(self, product: str) -> list[str]:
        folder = self.product_dir(product)
        if not folder.is_dir():
            return []
        found = [p.name for p in folder.iterdir() if p.is_dir() and _VERSION_DIR.match(p.name)]
        return sorted(found, key=lambda name: int(name[1:]))

    def latest_version(self, product: str) -> str | None:
        versions = self.versions(product)
        return versions[-1] if versions else None

    def open(self, product: str, version: str | None = None) -> StoredModel:
        """Read a version's metadata (the latest when `version` is None)."""
        version = version or self.latest_version(product)
        if version is None:
            raise ModelError(f"no model for product {product!r} in {self.root} (run 'inspectd enroll' first)")
        path = self.product_dir(product) / version
        meta_path = path / METADATA_FILE
        if not meta_path.is_file():
            raise ModelError(f"model {product} {version} not found or incomplete ({meta_path} missing)")
        try:
            raw = meta_path.read_bytes()
            checksums = _read_checksums(path / CHECKSUMS_FILE)
        except OSError as exc:
            raise ModelError(f"model {product} {version} cannot be read: {exc}") from exc
        if checksums is not None and checksums.get(METADATA_FILE) != bytes_sha256(raw):
            raise ModelError(f"model {product} {version} is corrupt or was edited: {METADATA_FILE} fails its "
                             f"checksum in {CHECKSUMS_FILE}; enroll again (or restore the file)")
        try:
            metadata = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"model {product} {version} is corrupt: {METADATA_FILE}: {exc}") from exc
        found = metadata.get("format_version") if isinstance(metadata, dict) else "?"
        if found != (FORMAT_VERSION if checksums is not None else LEGACY_FORMAT):
            missing = f" ({CHECKSUMS_FILE} is missing)" if found == FORMAT_VERSION else ""
            raise ModelError(f"model {product} {version}: unsupported model format {found}{missing}")
        if checksums is None:
            _warn_legacy(product, version)
        return StoredModel(product=product, version=version, path=path, metadata=metadata)

    def write(self, product: str, metadata: dict, arrays: dict[str, np.ndarray]) -> StoredModel:
        """Write a new version atomically and return it. Metadata gains `files`,
        `product`, `version` and `format_version`."""
        folder = self.product_dir(product)
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
        try:
            os.chmod(staging, dir_mode())  # mkdtemp's 0700 would shut out the operators' group
            files = {}
            for name, array in arrays.items():
                file_name = f"{name}.npy"
                np.save(staging / file_name, np.ascontiguousarray(array), allow_pickle=False)
                files[name] = {"file": file_name, "sha256": file_sha256(staging / file_name),
                               "shape": list(array.shape), "dtype": str(array.dtype)}
            with self.lock(product):
                version = _next_version(self.versions(product))
                full = {**metadata, "format_version": FORMAT_VERSION, "product": product,
                        "version": version, "files": files}
                _write_json(staging / METADATA_FILE, full)
                _write_checksums(staging, [METADATA_FILE, *(record["file"] for record in files.values())])
                _fsync_dir(staging)
                os.rename(staging, folder / version)
                _fsync_dir(folder)
        except OSError as exc:  # a full disk or lost permissions: nothing half-written stays
            shutil.rmtree(staging, ignore_errors=True)
            raise ModelError(f"cannot write model {product} to {folder}: {exc.strerror or exc}; "
                             "no new version was written") from exc
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return StoredModel(product=product, version=version, path=folder / version, metadata=full)

    @contextmanager
    def lock(self, product: str) -> Iterator[None]:
        """Exclusive per-product lock across processes (enrollments run one at a time)."""
        folder = self.product_dir(product)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _next_version(existing: list[str]) -> str:
    number = int(existing[-1][1:]) + 1 if existing else 1
    return f"v{number:04d}"


def _write_json(path: Path, data: dict) -> None:
    with path.open("w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    for name in os.listdir(path.parent):
        if name.endswith(".npy"):
            with open(path.parent / name, "rb+") as array_file:
                os.fsync(array_file.fileno())


def _write_checksums(folder: Path, names: list[str]) -> None:
    lines = "".join(f"{file_sha256(folder / name)}  {name}\n" for name in names)
    with (folder / CHECKSUMS_FILE).open("w", encoding="utf-8") as handle:
        handle.write(lines)
        handle.flush()
        os.fsync(handle.fileno())


def _read_checksums(path: Path) -> dict[str, str] | None:
    """name -> sha256 from a SHA256SUMS file, or None when there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    sums = {}
    for line in text.splitlines():
        digest, _, name = line.partition("  ")
        sums[name] = digest
    return sums


_warned_legacy: set[tuple[str, str]] = set()


def _warn_legacy(product: str, version: str) -> None:
    if (product, version) not in _warned_legacy:
        _warned_legacy.add((product, version))
        log.warning("model %s %s was written by an older inspectd: its %s is not covered by a checksum "
                    "(enroll again to get one that is)", product, version, METADATA_FILE)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
