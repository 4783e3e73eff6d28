"""Backbone trunk, weight sources and patch-feature aggregation (method.md section 1)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from inspectd import backbone as backbone_module
from inspectd.backbone import RandomWeightsWarning, Trunk, WeightsInfo, build_trunk, trunk_for
from inspectd.config import BACKBONES
from inspectd.errors import ModelError
from inspectd.features import (IMAGENET_MEAN, IMAGENET_STD, OfficialAggregator, PatchFeatureExtractor,
                               aggregate_concat, pooling_matrix)

slow = pytest.mark.slow
CHANNELS = {  # (layer1, layer2, layer3) output channels
    "resnet18": (64, 128, 256),
    "wide_resnet50_2": (256, 512, 1024),
    "wide_resnet101_2": (256, 512, 1024),
}


# ------------------------------------------------------- reference aggregation


def reference_official(layer_maps: list[torch.Tensor], embed_dim: int) -> torch.Tensor:
    """The reference PatchCore aggregation, literally: unfold 3x3 -> bilinear resize to
    the first layer's grid -> adaptive_avg_pool1d per layer -> stack -> adaptive_avg_pool1d.
    Returns (B, H0, W0, embed_dim)."""
    grid = tuple(layer_maps[0].shape[-2:])
    batch = layer_maps[0].shape[0]
    per_layer = []
    for fmap in layer_maps:
        b, c, h, w = fmap.shape
        unfolded = F.unfold(fmap, kernel_size=3, stride=1, padding=1)  # (B, C*9, h*w), channel-major
        unfolded = unfolded.reshape(b, c * 9, h, w)
        if (h, w) != grid:
            unfolded = F.interpolate(unfolded, size=grid, mode="bilinear", align_corners=False)
        vectors = unfolded.permute(0, 2, 3, 1).reshape(-1, 1, c * 9)
        per_layer.append(F.adaptive_avg_pool1d(vectors, embed_dim).squeeze(1))  # (N, E)
    stacked = torch.stack(per_layer, dim=1)  # (N, L, E)
    merged = F.adaptive_avg_pool1d(stacked.reshape(len(stacked), 1, -1), embed_dim).squeeze(1)
    return merged.reshape(batch, *grid, embed_dim)


@pytest.mark.parametrize("shapes, embed_dim", [
    ([(2, 5, 7, 9), (2, 6, 4, 5)], 16),  # 2 layers, odd sizes, grid not a multiple
    ([(1, 8, 9, 11), (1, 12, 5, 6), (1, 20, 3, 3)], 24),  # 3 layers
    ([(3, 3, 6, 6), (3, 4, 3, 3)], 40),  # embed_dim > C*9 for both layers: pooling upsamples
    ([(2, 16, 5, 5)], 20),  # a single layer
    ([(1, 7, 1, 1), (1, 5, 1, 1)], 10),  # 1x1 grids: every neighbour is padding
    ([(1, 512, 6, 5), (1, 1024, 3, 3)], 1024),  # wide_resnet50_2's layers: depthwise and 2-channel groups
    ([(1, 128, 4, 4), (1, 256, 2, 2)], 1024),  # resnet18's layers: windows cross channel boundaries
])
def test_official_aggregator_equals_reference(shapes: list[tuple[int, ...]], embed_dim: int) -> None:
    generator = torch.Generator().manual_seed(sum(map(sum, shapes)))
    maps = [torch.randn(shape, generator=generator) for shape in shapes]
    expected = reference_official(maps, embed_dim)
    got = OfficialAggregator([s[1] for s in shapes], embed_dim, torch.device("cpu"))(maps)
    assert got.shape == (shapes[0][0], embed_dim, *shapes[0][2:])
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.permute(0, 2, 3, 1), expected, rtol=1e-5, atol=1e-5)


def test_reference_is_sensitive() -> None:
    """The comparison above can fail: a shifted neighbourhood gives other values."""
    maps = [torch.randn(1, 4, 5, 5), torch.randn(1, 4, 3, 3)]
    got = OfficialAggregator([4, 4], 8, torch.device("cpu"))(maps).permute(0, 2, 3, 1)
    shifted = reference_official([torch.roll(maps[0], 1, dims=3), maps[1]], 8)
    assert not torch.allclose(got, shifted, atol=1e-3)


@pytest.mark.parametrize("n_in, n_out", [(10, 3), (27, 8), (8, 27), (7, 7), (1024, 1024), (13, 1)])
def test_pooling_matrix_is_adaptive_avg_pool1d(n_in: int, n_out: int) -> None:
    x = torch.randn(5, n_in, dtype=torch.float64)
    expected = F.adaptive_avg_pool1d(x[:, None], n_out)[:, 0]
    got = torch.from_numpy(pooling_matrix(n_in, n_out).toarray()) @ x.T
    torch.testing.assert_close(got.T, expected)


def test_concat_aggregation() -> None:
    maps = [torch.randn(2, 5, 8, 10), torch.randn(2, 7, 4, 5), torch.randn(2, 3, 2, 3)]
    out = aggregate_concat(maps)
    assert out.shape == (2, 15, 8, 10)
    torch.testing.assert_close(out[:, :5], F.avg_pool2d(maps[0], 3, 1, 1))
    torch.testing.assert_close(out[:, 5:12], F.interpolate(F.avg_pool2d(maps[1], 3, 1, 1), size=(8, 10),
                                                           mode="bilinear", align_corners=False))


# ------------------------------------------------------------------- the trunk


@slow
def test_trunk_stops_after_last_requested_layer() -> None:
    trunk, _ = build_trunk("resnet18", ("layer3", "layer1"), "random")
    assert trunk.layers == ("layer1", "layer3")  # network order
    assert list(trunk.stages) == ["layer1", "layer2", "layer3"]
    names = {name for name, _ in trunk.named_modules()}
    assert not any(n.startswith(("stages.layer4", "fc", "avgpool")) for n in names)
    assert not trunk.training
    assert not any(p.requires_grad for p in trunk.parameters())
    outputs = trunk(torch.rand(2, 3, 64, 96))
    assert [tuple(o.shape) for o in outputs] == [(2, 64, 16, 24), (2, 256, 4, 6)]


@slow
def test_trunk_outputs_match_the_full_network() -> None:
    full = torchvision.models.resnet18(weights=None).eval()
    trunk = Trunk(full, ("layer2",)).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = full.layer2(full.layer1(full.maxpool(full.relu(full.bn1(full.conv1(x))))))
        (got,) = trunk(x)
    torch.testing.assert_close(got, expected)
    assert "layer3" not in dict(trunk.named_children())["stages"]


@slow
@pytest.mark.parametrize("name", BACKBONES)
def test_each_backbone_is_selectable(name: str) -> None:
    """Construction and shapes on the meta device: no memory, no time, no weights."""
    with torch.device("meta"):
        trunk, info = build_trunk(name, ("layer1", "layer2", "layer3"), "random")
        outputs = trunk(torch.empty(1, 3, 64, 96))
    assert info.source == "random"
    assert [o.shape[1] for o in outputs] == list(CHANNELS[name])
    assert [tuple(o.shape[2:]) for o in outputs] == [(16, 24), (8, 12), (4, 6)]
    assert "layer4" not in trunk.stages


@slow
def test_unknown_backbone_or_layer() -> None:
    with pytest.raises(ModelError, match="unknown backbone"):
        build_trunk("resnet_nope", ("layer2",), "random")
    with pytest.raises(ModelError, match="layer7"):
        build_trunk("resnet18", ("layer2", "layer7"), "random")


# ---------------------------------------------------------------------- weights


@slow
def test_random_weights_are_seeded_and_warn() -> None:
    torch.manual_seed(99)
    expected_next = torch.rand(3)
    torch.manual_seed(99)
    with pytest.warns(RandomWeightsWarning, match="RANDOM"):
        a, info = build_trunk("resnet18", ("layer2",), "random", seed=5)
    torch.testing.assert_close(torch.rand(3), expected_next)  # the caller's RNG is untouched
    with pytest.warns(RandomWeightsWarning):
        b, _ = build_trunk("resnet18", ("layer2",), "random", seed=5)
    with pytest.warns(RandomWeightsWarning):
        c, _ = build_trunk("resnet18", ("layer2",), "random", seed=6)
    assert info == WeightsInfo(source="random", name="random", sha256=None, seed=5)
    for (key, pa), pb, pc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(pa, pb), key
    assert not torch.equal(a.stem[0].weight, c.stem[0].weight)


@slow
def test_random_trunk_is_rebuilt_identically() -> None:
    a, info = build_trunk("resnet18", ("layer2",), "random", seed=3)
    b = trunk_for("resnet18", ("layer2",), WeightsInfo.from_json(info.to_json()))
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(a(x)[0], b(x)[0], rtol=0, atol=0)


@slow
def test_local_state_dict_file(resnet18_state_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(backbone_module.torch, "load", spy)
    trunk, info = build_trunk("resnet18", ("layer1", "layer2"), str(resnet18_state_file))
    assert calls and all(c.get("weights_only") is True for c in calls)
    assert info.source == "file"
    assert info.name == str(resnet18_state_file.resolve())
    assert info.sha256 == hashlib.sha256(resnet18_state_file.read_bytes()).hexdigest()
    saved = real_load(resnet18_state_file, weights_only=True)
    torch.testing.assert_close(trunk.stages["layer2"][0].conv1.weight, saved["layer2.0.conv1.weight"])
    torch.testing.assert_close(trunk.stem[1].running_mean, saved["bn1.running_mean"])
    # trunk_for rebuilds it while the file is unchanged
    rebuilt = trunk_for("resnet18", ("layer1", "layer2"), info)
    torch.testing.assert_close(rebuilt.stem[0].weight, saved["conv1.weight"])


@slow
def test_wrapped_state_dict_without_classifier(tmp_path: Path, resnet18_state_file: Path) -> None:
    state = torch.load(resnet18_state_file, weights_only=True)
    trunk_only = {k: v for k, v in state.items() if not k.startswith("fc.")}
    path = tmp_path / "wrapped.pt"
    torch.save({"state_dict": trunk_only, "epoch": 3}, path)
    trunk, info = build_trunk("resnet18", ("layer2",), str(path))
    torch.testing.assert_close(trunk.stem[0].weight, state["conv1.weight"])


@slow
def test_changed_or_missing_weights_file_refused(tmp_path: Path, resnet18_state_file: Path) -> None:
    path = tmp_path / "line.pth"
    path.write_bytes(resnet18_state_file.read_bytes())
    _, info = build_trunk("resnet18", ("layer2",), str(path))
    torch.manual_seed(1)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(ModelError, match="changed since enrollment"):
        trunk_for("resnet18", ("layer2",), info)
    path.unlink()
    with pytest.raises(ModelError, match="missing"):
        trunk_for("resnet18", ("layer2",), info)
    with pytest.raises(ModelError, match="not found"):
        build_trunk("resnet18", ("layer2",), str(tmp_path / "none.pth"))


@slow
@pytest.mark.filterwarnings("ignore:.*meta parameter:UserWarning")
def test_wrong_architecture_file_refused(resnet18_state_file: Path) -> None:
    with pytest.raises(ModelError, match="do not fit resnet34") as info:
        build_trunk("resnet34", ("layer2",), str(resnet18_state_file))  # missing blocks
    assert "missing" in str(info.value) and str(resnet18_state_file) in str(info.value)
    with torch.device("meta"):  # shape mismatch; meta keeps the big model free
        with pytest.raises(ModelError, match="do not fit wide_resnet50_2"):
            build_trunk("wide_resnet50_2", ("layer2",), str(resnet18_state_file))


@slow
def test_extra_keys_refused(tmp_path: Path, resnet18_state_file: Path) -> None:
    state = torch.load(resnet18_state_file, weights_only=True)
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    path = tmp_path / "extra.pth"
    torch.save(state, path)
    with pytest.raises(ModelError, match="unexpected"):
        build_trunk("resnet18", ("layer2",), str(path))


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_weights_file_cannot_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": _Payload(str(marker))}, path)
    with pytest.raises(ModelError, match="not a loadable state-dict"):
        build_trunk("resnet18", ("layer2",), str(path))
    assert not marker.exists()
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ModelError, match="evil.pth"):
        build_trunk("resnet18", ("layer2",), str(path))
    torch.save([torch.zeros(1)], path)
    with pytest.raises(ModelError, match="state dict"):
        build_trunk("resnet18", ("layer2",), str(path))


def test_imagenet_offline_gives_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """No download is attempted: get_model fails as it would on an air-gapped PC."""

    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.models, "get_model", offline)
    with pytest.raises(ModelError) as info:
        build_trunk("wide_resnet50_2", ("layer2", "layer3"), "imagenet")
    message = str(info.value)
    assert "wide_resnet50_2" in message and "without internet" in message and "local state-dict file" in message
    assert "name resolution" in message


# -------------------------------------------------------------------- extractor


@pytest.fixture(scope="module")
def r18_trunk() -> Trunk:
    return build_trunk("resnet18", ("layer1", "layer2"), "random", seed=0)[0]


@slow
@pytest.mark.parametrize("aggregation", ["official", "concat"])
def test_batch_equals_single(r18_trunk: Trunk, aggregation: str) -> None:
    extractor = PatchFeatureExtractor(r18_trunk, aggregation, 48)
    images = [np.random.default_rng(i).random((64, 80, 3), dtype=np.float32) for i in range(3)]
    batch = extractor(extractor.to_tensor(images))
    expected_dim = 48 if aggregation == "official" else 64 + 128
    assert batch.shape == (3, 16, 20, expected_dim) and batch.dtype == torch.float32
    assert extractor.feature_dim() == expected_dim
    for i, image in enumerate(images):
        torch.testing.assert_close(extractor(extractor.to_tensor([image]))[0], batch[i], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(batch[0], batch[1])


@slow
def test_extractor_matches_reference_pipeline(r18_trunk: Trunk) -> None:
    extractor = PatchFeatureExtractor(r18_trunk, "official", 32)
    image = np.random.default_rng(0).random((64, 64, 3), dtype=np.float32)
    tensor = extractor.to_tensor([image])
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(tensor[0], (torch.from_numpy(image).permute(2, 0, 1) - mean) / std)
    with torch.no_grad():
        expected = reference_official(r18_trunk(tensor), 32)
    torch.testing.assert_close(extractor(tensor), expected, rtol=1e-4, atol=1e-5)


@slow
def test_unknown_aggregation(r18_trunk: Trunk) -> None:
    with pytest.raises(ValueError, match="aggregation"):
        PatchFeatureExtractor(r18_trunk, "median", 32)
