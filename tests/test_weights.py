"""`inspectd weights export|check`: a weights file for air-gapped line PCs.

Nothing is downloaded: torchvision's cache ($TORCH_HOME/hub/checkpoints) is filled
with a seeded random resnet18 state dict under the file name torchvision looks for,
which is exactly what a connected machine has after its first download.
"""

from __future__ import annotations

import subprocess
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision

from inspectd import cli
from inspectd.backbone import build_trunk
from inspectd.errors import ModelError

BACKBONE = "resnet18"


def inspectd(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def torch_home(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A torchvision cache holding 'ImageNet' resnet18 weights (seeded random)."""
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    with torch.random.fork_rng():
        torch.manual_seed(7)
        state = torchvision.models.resnet18(weights=None).state_dict()
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / Path(weights.url).name)
    return tmp_path / "torch", state


def test_export_writes_the_state_dict_and_a_sha256_that_sha256sum_accepts(torch_home, tmp_path: Path, capsys,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    home, cached = torch_home
    monkeypatch.setenv("TORCH_HOME", str(home))  # torchvision's cache, read at each call
    output = tmp_path / "out" / "resnet18.pth"
    code, out, err = inspectd(capsys, "weights", "export", "--backbone", BACKBONE, output)
    assert code == 0, err
    assert "ResNet18_Weights.IMAGENET1K_V1" in out and "resnet18.pth.sha256" in out
    exported = torch.load(output, weights_only=True)
    assert exported.keys() == cached.keys() and all(torch.equal(exported[k], cached[k]) for k in cached)
    check = subprocess.run(["sha256sum", "-c", "resnet18.pth.sha256"], cwd=output.parent, capture_output=True,
                           text=True)
    assert check.returncode == 0 and "resnet18.pth: OK" in check.stdout
    assert sorted(p.name for p in output.parent.iterdir()) == ["resnet18.pth", "resnet18.pth.sha256"]
    # The line PC enrolls with the file, and `weights check` confirms the copy.
    _, info = build_trunk(BACKBONE, ("layer1", "layer2"), str(output))
    assert info.source == "file" and info.sha256 == output.with_name("resnet18.pth.sha256").read_text().split()[0]
    code, out, _ = inspectd(capsys, "weights", "check", "--backbone", BACKBONE, output)
    assert code == 0 and "OK" in out


def test_a_copy_cut_short_is_refused_everywhere(tmp_path: Path, capsys) -> None:
    output = tmp_path / "r18.pth"
    assert inspectd(capsys, "weights", "export", "--backbone", BACKBONE, "--from", "random", output)[0] == 0
    data = output.read_bytes()
    output.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="does not match r18.pth.sha256.*copied incompletely"):
        build_trunk(BACKBONE, ("layer1",), str(output))
    code, _, err = inspectd(capsys, "weights", "check", "--backbone", BACKBONE, output)
    assert code == 1 and "copied incompletely" in err
    (tmp_path / "r18.pth.sha256").unlink()
    code, _, err = inspectd(capsys, "weights", "check", "--backbone", BACKBONE, output)
    assert code == 1 and "no checksum file" in err


def test_random_exports_are_reproducible_by_seed(tmp_path: Path, capsys) -> None:
    digests = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        assert cli.main(["weights", "export", "--backbone", BACKBONE, "--from", "random", "--seed", str(seed),
                         str(tmp_path / f"{name}.pth")]) == 0
        digests.append((tmp_path / f"{name}.pth.sha256").read_text().split()[0])
    assert digests[0] == digests[1] != digests[2]
    assert "for tests only" in capsys.readouterr().out


def test_failures_are_one_line_and_leave_no_file(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    output = tmp_path / "w.pth"
    assert cli.main(["weights", "export", "--backbone", BACKBONE, str(output)]) == 1
    err = capsys.readouterr().err
    assert "can download torchvision's weights" in err and len(err.strip().splitlines()) == 1
    assert cli.main(["weights", "export", "--backbone", BACKBONE, "--variant", "IMAGENET1K_V9", str(output)]) == 1
    assert "no weights 'IMAGENET1K_V9'" in capsys.readouterr().err
    small = tmp_path / "small.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), small)
    assert cli.main(["weights", "export", "--backbone", "wide_resnet50_2", "--from", str(small), str(output)]) == 1
    assert "do not fit wide_resnet50_2: size mismatch" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.pth"]
