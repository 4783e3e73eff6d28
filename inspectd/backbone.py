"""The pretrained CNN trunk: which weights, where from, and only the layers we need.

Three weight sources:
- "imagenet": torchvision's own download into its cache (normal machines);
- a path to a local state-dict file (air-gapped line PCs), loaded with
  ``torch.load(weights_only=True)``, which cannot execute code, and its sha256 recorded;
- "random": seeded random initialisation, for tests and demos only (warns loudly).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from .errors import ModelError
from .hashing import file_sha256, verify_checksum_file

log = logging.getLogger(__name__)

LAYER_ORDER = ("layer1", "layer2", "layer3", "layer4")
RANDOM_WEIGHTS_WARNING = (
    "RANDOM BACKBONE WEIGHTS: features are not ImageNet features; anomaly scores are for "
    "tests and demos only and must not be used to inspect real parts"
)


class RandomWeightsWarning(UserWarning):
    """Raised as a warning whenever a backbone with random weights is built."""


@dataclass(frozen=True)
class WeightsInfo:
    """Where a backbone's weights came from; recorded in every product model."""

    source: str  # "imagenet", "file" or "random"
    name: str  # torchvision weights enum name, file path, or "random"
    sha256: str | None = None
    seed: int | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "WeightsInfo":
        return cls(**data)


class Trunk(nn.Module):
    """A torchvision ResNet cut after the deepest requested layer.

    forward() returns the requested layers' outputs in network order; nothing after
    the last requested layer (layer4, the classifier) is kept or run.
    """

    def __init__(self, resnet: nn.Module, layers: tuple[str, ...]):
        super().__init__()
        unknown = [name for name in layers if name not in LAYER_ORDER]
        if unknown:
            raise ModelError(f"unknown backbone layer(s): {', '.join(unknown)}")
        self.layers = tuple(sorted(layers, key=LAYER_ORDER.index))
        last = LAYER_ORDER.index(self.layers[-1])
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.stages = nn.ModuleDict({name: getattr(resnet, name) for name in LAYER_ORDER[: last + 1]})

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(images)
        outputs = []
        for name, stage in self.stages.items():
            x = stage(x)
            if name in self.layers:
                outputs.append(x)
        return outputs


def build_trunk(backbone: str, layers: tuple[str, ...], weights: str, seed: int = 0) -> tuple[Trunk, WeightsInfo]:
    """Build the truncated backbone in eval mode on the CPU."""
    if backbone not in torchvision.models.list_models(module=torchvision.models):
        raise ModelError(f"unknown backbone {backbone!r}")
    if weights == "imagenet":
        resnet, info = _imagenet(backbone)
    elif weights == "random":
        resnet, info = _random(backbone, seed)
    else:
        resnet, info = _from_file(backbone, Path(weights))
    trunk = Trunk(resnet, layers).eval()
    for parameter in trunk.parameters():
        parameter.requires_grad_(False)
    return trunk, info


def trunk_for(backbone: str, layers: tuple[str, ...], info: WeightsInfo) -> Trunk:
    """Rebuild the trunk a model was enrolled with, refusing a changed weights file."""
    if info.source == "file":
        path = Path(info.name)
        if not path.is_file():
            raise ModelError(f"the model's weights file is missing: {path}")
        trunk, actual = build_trunk(backbone, layers, str(path))
        if actual.sha256 != info.sha256:
            raise ModelError(f"weights file {path} changed since enrollment (sha256 {actual.sha256[:12]}..., "
                             f"expected {str(info.sha256)[:12]}...)")
        return trunk
    weights = "random" if info.source == "random" else "imagenet"
    trunk, actual = build_trunk(backbone, layers, weights, seed=info.seed or 0)
    if info.source == "imagenet" and actual.name != info.name:
        raise ModelError(f"torchvision now provides {actual.name}, the model was enrolled with {info.name}")
    return trunk


def _imagenet(backbone: str) -> tuple[nn.Module, WeightsInfo]:
    enum = torchvision.models.get_model_weights(backbone).IMAGENET1K_V1
    try:
        resnet = torchvision.models.get_model(backbone, weights=enum)
    except Exception as exc:  # network or cache errors come in many types
        raise ModelError(
            f"cannot load ImageNet weights for {backbone} ({exc}); on a machine without internet "
            "set 'weights' to a local state-dict file") from exc
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
    sha = file_sha256(cached) if cached.is_file() else None
    return resnet, WeightsInfo(source="imagenet", name=f"{type(enum).__name__}.IMAGENET1K_V1", sha256=sha)


def _random(backbone: str, seed: int) -> tuple[nn.Module, WeightsInfo]:
    warnings.warn(RANDOM_WEIGHTS_WARNING, RandomWeightsWarning, stacklevel=3)
    log.warning(RANDOM_WEIGHTS_WARNING)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        resnet = torchvision.models.get_model(backbone, weights=None)
    finally:
        torch.random.set_rng_state(state)
    return resnet, WeightsInfo(source="random", name="random", seed=seed)


def _from_file(backbone: str, path: Path) -> tuple[nn.Module, WeightsInfo]:
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    digest = file_sha256(path)
    verify_checksum_file(path, digest)  # a copy cut short is refused before it is read
    resnet = fitted(backbone, read_state_dict(path), str(path), allow_missing_classifier=True)
    return resnet, WeightsInfo(source="file", name=str(path.resolve()), sha256=digest)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict of tensors from a file, read without executing code (a training
    checkpoint's "state_dict" entry is taken)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{path}: not a loadable state-dict file ({exc})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ModelError(f"{path}: expected a state dict of tensors")
    return state


def fitted(backbone: str, state: dict[str, torch.Tensor], origin: str, *,
           allow_missing_classifier: bool = False) -> nn.Module:
    """The torchvision `backbone` with `state` loaded; ModelError naming `origin`
    when the weights are of another network."""
    resnet = torchvision.models.get_model(backbone, weights=None)
    try:
        missing, unexpected = resnet.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # the first line only says "Error(s) in loading state_dict"
        detail = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
        raise ModelError(f"{origin}: weights do not fit {backbone}: {detail}") from exc
    # Only the classifier may be absent: the trunk never uses it.
    missing = [key for key in missing if not (allow_missing_classifier and key.startswith("fc."))]
    if missing or unexpected:
        raise ModelError(f"{origin}: weights do not fit {backbone} (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return resnet
