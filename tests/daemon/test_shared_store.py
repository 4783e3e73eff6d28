"""One model, every line PC: a real daemon scores from verified local copies of a shared
model store, switches to a version enrolled there at its next batch, keeps scoring when
the store goes away, and refuses a corrupt copy."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from daemon_support import PRODUCT, DEFAULTS, DaemonEnv, copy_as, make_daemon_env
from inspectd.config import load_config
from inspectd.db import open_database
from inspectd.enroll import enroll
from inspectd.lifecycle import activate
from inspectd.store import ModelStore
from inspectd.synthetic import generate_images

pytestmark = pytest.mark.slow


def wait_for_version(pc: DaemonEnv, name: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = {Path(r["path"]).name: r for r in pc.results()}
        if name in rows:
            return rows[name]
        time.sleep(0.1)
    raise AssertionError(f"{name} not scored:\n{pc.log()[-3000:]}")


def line_pc(tmp_path: Path, model_store: Path, shared: Path, database_url: str) -> DaemonEnv:
    """A line PC that scores from local copies (an empty local store) of *shared*."""
    pc = make_daemon_env(tmp_path / "pc", model_store, database_url)
    text = pc.config_path.read_text().replace(f'store_dir = "{model_store}"',
                                              f'store_dir = "{tmp_path / "local"}"\nshared_store_dir = "{shared}"')
    pc.config_path.write_text(text)
    return pc


def test_line_pc_scores_from_verified_copies_of_the_shared_store(tmp_path: Path, model_store: Path,
                                                                sample_images: list[Path]) -> None:
    shared = tmp_path / "shared"
    shutil.copytree(model_store, shared)
    pc = line_pc(tmp_path, model_store, shared, f"sqlite:///{tmp_path / 'pc.db'}")
    try:
        proc = pc.start()
        pc.wait_ready()
        copy_as(sample_images[0], pc.drop / "a.png")
        assert wait_for_version(pc, "a.png")["model_version"] \
            == "v0001"
        assert (tmp_path / "local" / PRODUCT / "v0001" / "SHA256SUMS").is_file()
        # a quality engineer enrolls v0002 into the shared store
        engineer = tmp_path / "engineer.toml"
        engineer.write_text(f'store_dir = "{shared}"\ndevice = "cpu"\n{DEFAULTS}')
        more = generate_images(tmp_path / "more", n_good=3, n_defect=0, category="washer", size=(96, 96), seed=9)
        assert enroll(load_config(engineer), PRODUCT, more[0].parent, add=True).version == "v0002"
        deadline = time.monotonic() + 60
        index = 0
        while True:  # the next batch after the copy is verified uses v0002
            row = wait_for_version(pc, copy_as(sample_images[1], pc.drop / f"b{index}.png").name)
            if row["model_version"] == "v0002":
                break
            assert time.monotonic() < deadline, "never switched to v0002"
            index += 1
            time.sleep(1.0)
        # a corrupt v0003 in the shared store is refused; then the store goes away
        shutil.copytree(shared / PRODUCT / "v0002", shared / PRODUCT / "v0003")
        bank = shared / PRODUCT / "v0003" / "bank.npy"
        data = bytearray(bank.read_bytes())
        data[-8:] = b"\x00" * 8
        bank.write_bytes(bytes(data))
        deadline = time.monotonic() + 30
        while "fails its checksum" not in pc.log():
            assert time.monotonic() < deadline, pc.log()[-3000:]
            time.sleep(0.2)
        shared.rename(tmp_path / "unmounted")
        row = wait_for_version(pc, copy_as(sample_images[2], pc.drop / "c.png").name)
        assert row["model_version"] == "v0002" and row["verdict"] in ("OK", "NG")
        assert not (tmp_path / "local" / PRODUCT / "v0003").exists()
        assert pc.stop(proc) == 0
    finally:
        pc.kill_all()


def test_a_new_line_pc_scores_with_the_earlier_version_that_is_active(tmp_path: Path, model_store: Path,
                                                                       sample_images: list[Path]) -> None:
    """The shared store has v0001 and v0002, the database says v0001 is active (set back
    after v0002): a line PC with an empty local store copies both and scores with v0001."""
    shared = tmp_path / "shared"
    shutil.copytree(model_store, shared)
    database_url = f"sqlite:///{tmp_path / 'plant.db'}"
    engineer = tmp_path / "engineer.toml"
    engineer.write_text(f'store_dir = "{shared}"\ndatabase_url = "{database_url}"\ndevice = "cpu"\n{DEFAULTS}')
    more = generate_images(tmp_path / "more", n_good=3, n_defect=0, category="washer", size=(96, 96), seed=9)
    engineer_config = load_config(engineer)
    assert enroll(engineer_config, PRODUCT, more[0].parent, add=True).version == "v0002"
    with open_database(database_url) as db:
        activate(db, ModelStore(shared), PRODUCT, "v0001", "kim", "v0002 flags good parts")

    pc = line_pc(tmp_path, model_store, shared, database_url)
    try:
        proc = pc.start()
        pc.wait_ready()
        assert wait_for_version(pc, copy_as(sample_images[0], pc.drop / "a.png").name)["model_version"] == "v0001"
        assert ModelStore(tmp_path / "local").versions(PRODUCT) == ["v0001", "v0002"]
        assert pc.stop(proc) == 0
    finally:
        pc.kill_all()
