"""Backbone weights files for air-gapped line PCs: export on a connected machine, check
on the line PC.

`inspectd weights export` writes a plain state dict (tensors only, so
``torch.load(weights_only=True)`` reads it without executing code) and beside it a
``<file>.sha256`` in `sha256sum` format. Copy both; `sha256sum -c` or
`inspectd weights check` verifies the copy, and inspectd itself refuses a weights
file whose checksum file disagrees with it (`hashing.verify_checksum_file`).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision

from .backbone import build_trunk, fitted, read_state_dict
from .errors import ModelError
from .hashing import checksum_path, file_sha256, write_checksum_file

DEFAULT_VARIANT = "IMAGENET1K_V1"  # what `weights = "imagenet"` enrolls with


@dataclass(frozen=True)
class ExportedWeights:
    path: Path
    checksum_path: Path
    sha256: str
    size: int
    tensors: int
    origin: str  # what the weights came from, for the message


def export_weights(backbone: str, output: Path, source: str = "imagenet", *, variant: str = DEFAULT_VARIANT,
                   seed: int = 0) -> ExportedWeights:
    """Write the state dict of `backbone` from `source` ("imagenet": torchvision's
    download or cache; "random": seeded random weights; or a path to a checkpoint)
    to `output`, and its sha256 beside it. Nothing is left half-written, and the same
    weights give the same bytes (and sha256) on every machine."""
    state, origin = _state_dict(backbone, source, variant, seed)
    fitted(backbone, state, origin)  # every tensor, the classifier included
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    os.close(handle)
    try:
        with open(temporary, "wb") as handle:  # a file object: the archive's records are not named after the file
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        torch.load(temporary, map_location="cpu", weights_only=True)  # it reads back without pickle code
        digest = file_sha256(temporary)
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    sidecar = write_checksum_file(output, digest)
    return ExportedWeights(output, sidecar, digest, output.stat().st_size, len(state), origin)


def check_weights(path: Path, backbone: str) -> str:
    """Verify a weights file against its checksum file and `backbone`; returns its sha256."""
    if not checksum_path(path).is_file():
        raise ModelError(f"{path} has no checksum file {checksum_path(path).name} to verify it against")
    _, info = build_trunk(backbone, ("layer1",), str(path))
    assert info.sha256 is not None
    return info.sha256


def _state_dict(backbone: str, source: str, variant: str, seed: int) -> tuple[dict[str, torch.Tensor], str]:
    if backbone not in torchvision.models.list_models(module=torchvision.models):
        raise ModelError(f"unknown backbone {backbone!r}")
    if source == "imagenet":
        return _imagenet_state(backbone, variant)
    if source == "random":
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = torchvision.models.get_model(backbone, weights=None)
        return model.state_dict(), f"random weights (seed {seed}), for tests only"
    path = Path(source)
    if not path.is_file():
        raise ModelError(f"weights source not found: {path} (expected 'imagenet', 'random' or a checkpoint file)")
    return read_state_dict(path), str(path)


def _imagenet_state(backbone: str, variant: str) -> tuple[dict[str, torch.Tensor], str]:
    weights_enum = torchvision.models.get_model_weights(backbone)
    if variant not in weights_enum.__members__:
        raise ModelError(f"{backbone} has no weights {variant!r}; choose one of {', '.join(weights_enum.__members__)}")
    weights = weights_enum[variant]
    try:
        state = weights.get_state_dict(progress=False, check_hash=True)  # torchvision's cache, else a download
    except Exception as exc:  # network and cache errors come in many types
        raise ModelError(f"cannot get {type(weights).__name__}.{weights.name} ({exc}); run this on a machine "
                         f"that can download torchvision's weights") from exc
    return state, f"torchvision {type(weights).__name__}.{weights.name}"
