"""Fault soak (a script, not a test): one real daemon, every fault of a plant, for minutes.

    python bench/faults.py                 # 10 minutes, about 3 files per second
    python bench/faults.py --minutes 2 --rate 2

A camera drops files into three folders (local, local with `after_scoring = "move"`,
and a polled network-share folder) in every way a plant does: plain copies in four
formats, slow writers that pause with the file open or reopen it, a writer whose
clock is an hour behind, empty-then-filled files, temporary names renamed into
place, `latest.png` overwritten while queued, files that are never completed, names
that are not UTF-8, links, FIFOs, unreadable files and decode bombs. Meanwhile the
faults come: `kill -9` of the daemon (restarted like systemd would), long database
locks, a full database disk and a full results disk (small tmpfs mounts, as root),
a watched folder deleted and recreated, a corrupt newest model version, SIGHUP.

At the end every landed file must have exactly one row that belongs to its bytes;
each scored row is checked against the same model scoring the same bytes here.
Prints one table: files dropped, rows, lost, duplicated, wrong, error rows,
crashes, peak RSS. lost, duplicated, wrong, unexpected errors and crashes must be 0.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inspectd.config import load_config  # noqa: E402
from inspectd.daemon.landing import display_path  # noqa: E402
from inspectd.db import open_database  # noqa: E402
from inspectd.enroll import enroll  # noqa: E402
from inspectd.model import ProductModel  # noqa: E402
from inspectd.simulation import (SMALL_PRODUCT_DEFAULTS, WITHOUT_FILE_OVERRIDE, encode, fill_disk,  # noqa: E402
                                 hold_sqlite_lock, jpeg_claiming, mount_tmpfs, peak_rss_mb, replace_atomically, unmount,
                                 write_in_chunks)
from inspectd.store import ModelStore  # noqa: E402
from inspectd.synthetic import generate_images  # noqa: E402

PRODUCT = "part"
FORMATS = (".png", ".jpg", ".bmp", ".tiff")


@dataclass
class Landing:
    """A file that landed, what it holds, and what its row must be."""

    path: str
    sha256: str | None
    data: bytes | None
    expect_error: str | None = None  # words of the expected error row; None: a score


@dataclass
class Ledger:
    landings: list[Landing] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, path: Path, data: bytes | None, expect_error: str | None = None) -> None:
        digest = hashlib.sha256(data).hexdigest() if data is not None else None
        with self.lock:
            self.landings.append(Landing(display_path(path), digest, data, expect_error))


class Plant:
    """The working folder: configuration, model, drop folders, the daemon under supervision."""

    def __init__(self, work: Path, seconds_per_fault: float):
        self.work = work
        self.seconds_per_fault = seconds_per_fault
        self.rng = random.Random(7)
        self.samples = [cv2.imread(str(p)) for p in generate_images(
            work / "samples", n_good=12, n_defect=8, category="washer", size=(96, 96), seed=5)]
        self.mounts: list[Path] = []
        self.db_disk = self._disk("dbdisk", "16m")
        self.results_disk = self._disk("resultsdisk", "64m")
        self.folders = {name: work / "drop" / name for name in ("cam1", "cam2", "share", "spare")}
        self.archive = work / "archive"
        self.config_path = work / "config.toml"
        self._write_config()
        self.config = load_config(self.config_path)
        enroll(self.config, PRODUCT, generate_images(work / "good", n_good=12, n_defect=0, category="washer",
                                                     size=(96, 96), seed=1)[0].parent)
        self.wrapper = WITHOUT_FILE_OVERRIDE if os.geteuid() == 0 and shutil.which("setpriv") else ()
        self.proc: subprocess.Popen | None = None
        self.expected_exits: set[int] = set()
        self.crashes: list[str] = []
        self.peak_rss = 0.0
        self.starts = 0
        self.stopping = False

    def _disk(self, name: str, size: str) -> Path | None:
        point = self.work / name
        refused = mount_tmpfs(point, size) if os.geteuid() == 0 else "not root"
        if refused:
            print(f"note: no small disk for {name} ({refused}); its disk-full fault is skipped")
            point.mkdir(exist_ok=True)
            return None
        self.mounts.append(point)
        return point

    def _write_config(self) -> None:
        db_folder = self.db_disk or self.work / "dbdisk"
        results = self.results_disk or self.work / "resultsdisk"
        watch = "".join(
            f'[[watch]]\npath = "{path}"\nproduct = "{PRODUCT}"\nstation = "{name}"\n'
            + (f'after_scoring = "move"\narchive_dir = "{self.archive}"\n' if name == "cam2" else "")
            + ("network_share = true\n" if name == "share" else "") + "\n"
            for name, path in self.folders.items())
        self.config_path.write_text(f"""
store_dir = "{self.work / 'models'}"
database_url = "sqlite:///{db_folder / 'inspectd.db'}"
results_dir = "{results}"
device = "cpu"
log_level = "WARNING"
{SMALL_PRODUCT_DEFAULTS}
[daemon]
settle_seconds = 0.5
incomplete_seconds = 6.0
reconcile_seconds = 15.0
poll_seconds = 0.5
runtime_dir = "{self.work / 'run'}"
spool_dir = "{self.work / 'spool'}"
stop_timeout_seconds = 20.0
{watch}""")

    # -- the daemon, supervised as systemd would (Restart=on-failure) -------------------
    def supervise(self, until: threading.Event) -> None:
        while not until.is_set():
            self.starts += 1
            log = (self.work / f"daemon-{self.starts}.log").open("w")
            self.proc = subprocess.Popen([*self.wrapper, sys.executable, "-m", "inspectd.cli", "run", "--config",
                                          str(self.config_path)], stdout=log, stderr=subprocess.STDOUT,
                                         preexec_fn=lambda: os.umask(0o007))
            while self.proc.poll() is None:
                try:
                    self.peak_rss = max(self.peak_rss, peak_rss_mb(self.proc.pid))
                except (OSError, ValueError):
                    pass
                time.sleep(0.5)
            code = self.proc.returncode
            if self.proc.pid not in self.expected_exits and not (self.stopping and code == 0):
                self.crashes.append(f"start {self.starts}: exit {code} (see {log.name})")
            if self.stopping:
                return
            time.sleep(2.0)  # RestartSec

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.expected_exits.add(self.proc.pid)
            self.proc.kill()

    def unique_image(self, extension: str) -> bytes:
        """A sample image with one random pixel changed, so every drop has new bytes."""
        image = self.samples[self.rng.randrange(len(self.samples))].copy()
        y, x = self.rng.randrange(image.shape[0]), self.rng.randrange(image.shape[1])
        image[y, x] = [self.rng.randrange(256) for _ in range(3)]
        return encode(image, extension)


class Camera:
    """Drops files in all the ways a plant does, and records each in the ledger."""

    def __init__(self, plant: Plant, ledger: Ledger, rate: float):
        self.plant, self.ledger, self.rate = plant, ledger, rate
        self.rng = random.Random(11)
        self.count = 0
        self.writers: list[threading.Thread] = []
        self.latest: Landing | None = None

    def run(self, until: threading.Event) -> None:
        actions = [(self.plain, 30), (self.slow, 14), (self.renamed, 8), (self.latest_png, 6), (self.never_done, 2),
                   (self.odd_name, 1), (self.special, 1), (self.unreadable, 1), (self.bomb, 1)]
        functions, weights = zip(*actions)
        while not until.wait(self.rng.expovariate(self.rate)):
            self.rng.choices(functions, weights)[0]()
        for writer in self.writers:
            writer.join()

    def _target(self, extension: str, folders: tuple[str, ...] = ("cam1", "cam2", "share")) -> Path:
        self.count += 1
        folder = self.plant.folders[self.rng.choice(folders)]
        return folder / f"img_{self.count:05d}{extension}"

    def plain(self) -> None:
        extension = self.rng.choice(FORMATS)
        path, data = self._target(extension), self.plant.unique_image(extension)
        path.write_bytes(data)
        self.ledger.add(path, data)

    def slow(self) -> None:
        extension = self.rng.choice(FORMATS)
        path, data = self._target(extension), self.plant.unique_image(extension)
        style = self.rng.choice(["chunks", "reopened", "empty_first", "four_bytes", "old_clock"])
        cuts = {"empty_first": [0], "four_bytes": [4]}.get(style, sorted(self.rng.sample(range(1, len(data)), 2)))
        writer = threading.Thread(target=write_in_chunks, args=(path, data, cuts, self.rng.uniform(1.0, 2.5)),
                                  kwargs={"keep_open": style in ("chunks", "four_bytes"),
                                          "mtime_back": 3600.0 if style == "old_clock" else None})
        writer.start()
        self.writers.append(writer)
        self.ledger.add(path, data)

    def renamed(self) -> None:
        path = self._target(".png")
        data = self.plant.unique_image(".png")
        temporary = path.with_name(path.name + ".part")
        temporary.write_bytes(data)
        os.replace(temporary, path)
        self.ledger.add(path, data)

    def latest_png(self) -> None:
        """Overwrite cam1/latest.png once its previous content has been taken in."""
        path = self.plant.folders["cam1"] / "latest.png"
        if self.latest is not None and not taken_in(self.plant, self.latest):
            return
        data = self.plant.unique_image(".png")
        replace_atomically(path, data)
        self.ledger.add(path, data)
        self.latest = self.ledger.landings[-1]

    def never_done(self) -> None:
        path = self._target(".png", ("cam1", "share"))
        data = self.plant.unique_image(".png")[:-40]
        path.write_bytes(data)
        self.ledger.add(path, data, "truncated PNG")

    def odd_name(self) -> None:
        self.count += 1
        data = self.plant.unique_image(".png")
        raw = os.fsencode(str(self.plant.folders["cam1"])) + f"/cam_{self.count}_".encode() + b"\xe9.png"
        with open(raw, "wb") as handle:
            handle.write(data)
        self.ledger.add(Path(os.fsdecode(raw)), None, "not valid UTF-8")

    def special(self) -> None:
        path = self._target(".png", ("cam1",))
        if self.rng.random() < 0.5:
            os.mkfifo(path)
            self.ledger.add(path, None, "FIFO")
        else:
            path.symlink_to(self.plant.work / "samples" / "good_000.png")
            self.ledger.add(path, None, "symbolic link")

    def unreadable(self) -> None:
        if not self.plant.wrapper:
            return  # as plain root every file is readable
        path = self._target(".png", ("cam1",))
        data = self.plant.unique_image(".png")
        path.write_bytes(data)
        path.chmod(0)
        self.ledger.add(path, None, "permission denied")

    def bomb(self) -> None:
        path = self._target(".jpg", ("cam1",))
        data = jpeg_claiming(self.plant.unique_image(".jpg"), 30000, 30000)
        path.write_bytes(data)
        self.ledger.add(path, data, "declares 30000x30000")


def taken_in(plant: Plant, landing: Landing) -> bool:
    """Whether the daemon has recorded an item for exactly these bytes at this path."""
    try:
        with sqlite3.connect(plant.config.database_url.removeprefix("sqlite:///"), timeout=1) as connection:
            query = "SELECT 1 FROM items WHERE path = ? AND sha256 = ?"
            return connection.execute(query, (landing.path, landing.sha256)).fetchone() is not None
    except sqlite3.Error:  # locked or full right now: not yet
        return False


class Faults:
    """One fault after another, each for a while, with kill -9s spread in between."""

    def __init__(self, plant: Plant, ledger: Ledger, kills: int):
        self.plant, self.ledger = plant, ledger
        self.kills = kills
        self.log: list[str] = []

    def run(self, until: threading.Event, seconds: float) -> None:
        faults = [self.database_lock, self.results_disk_full, self.database_disk_full, self.folder_recreated,
                  self.corrupt_model, self.reload]
        schedule = faults + [self.kill] * self.kills
        random.Random(3).shuffle(schedule)
        busy = 3 * self.plant.seconds_per_fault + 10  # the locks and full disks last, the rest is quick
        gap = max(5.0, (seconds - busy) / (len(schedule) + 1))
        for fault in schedule:
            if until.wait(gap):
                return
            started = time.monotonic()
            try:
                fault()
                outcome = f"{time.monotonic() - started:.0f} s"
            except Exception as exc:  # a fault that could not be staged is reported, not fatal
                outcome = f"not staged: {type(exc).__name__}: {exc}"
            self.log.append(f"{time.strftime('%H:%M:%S')} {fault.__name__} ({outcome})")
            print(self.log[-1], flush=True)

    def kill(self) -> None:
        self.plant.kill()

    def database_lock(self) -> None:
        holder = hold_sqlite_lock(Path(self.plant.config.database_url.removeprefix("sqlite:///")),
                                  self.plant.seconds_per_fault)
        holder.wait()

    def _full(self, disk: Path | None) -> None:
        if disk is None:
            return
        filler = fill_disk(disk)
        time.sleep(self.plant.seconds_per_fault)
        filler.unlink()

    def results_disk_full(self) -> None:
        self._full(self.plant.results_disk)

    def database_disk_full(self) -> None:
        self._full(self.plant.db_disk)

    def folder_recreated(self) -> None:
        spare = self.plant.folders["spare"]
        shutil.rmtree(spare, ignore_errors=True)
        time.sleep(3)
        spare.mkdir()
        time.sleep(2)
        for index in range(3):  # found by the new watch, not only by the next scan
            path, data = spare / f"after_recreate_{time.monotonic_ns()}_{index}.png", self.plant.unique_image(".png")
            path.write_bytes(data)
            self.ledger.add(path, data)

    def corrupt_model(self) -> None:
        """A newer version whose bank is damaged: scoring must go on with the one before."""
        more = generate_images(self.plant.work / f"more-{time.monotonic_ns()}", n_good=3, n_defect=0,
                               category="washer", size=(96, 96), seed=random.randrange(1000))
        report = enroll(self.plant.config, PRODUCT, more[0].parent, add=True)
        bank = self.plant.config.store_dir / PRODUCT / report.version / "bank.npy"
        data = bytearray(bank.read_bytes())
        data[-4:] = bytes(b ^ 0xFF for b in data[-4:])
        bank.write_bytes(bytes(data))

    def reload(self) -> None:
        if self.plant.proc is not None and self.plant.proc.poll() is None:
            self.plant.proc.send_signal(signal.SIGHUP)


def wait_for_rows(plant: Plant, ledger: Ledger, timeout: float) -> list[dict]:
    wanted = {(landing.path, landing.sha256) for landing in ledger.landings}
    deadline = time.monotonic() + timeout
    rows: list[dict] = []
    while time.monotonic() < deadline:
        try:
            with open_database(plant.config.database_url, create=False) as db:
                rows = db.query_results()
        except Exception:
            time.sleep(1)
            continue
        if wanted <= {(row["path"], row["sha256"]) for row in rows}:
            break
        time.sleep(1)
    else:
        print(f"gave up waiting after {timeout:.0f} s: {len(rows)} rows for {len(wanted)} files")
    return rows


def check(plant: Plant, ledger: Ledger, rows: list[dict]) -> dict[str, int]:
    by_identity: dict[tuple[str, str | None], list[dict]] = defaultdict(list)
    for row in rows:
        by_identity[(row["path"], row["sha256"])].append(row)
    landings = {(landing.path, landing.sha256): landing for landing in ledger.landings}
    missing = [key for key in landings if key not in by_identity]
    for path, digest in missing[:20]:
        others = [(r["sha256"] or "none")[:8] + ":" + r["verdict"] for r in rows if r["path"] == path]
        print(f"lost: {path} sha256 {(digest or 'none')[:8]} "
              f"(expected {landings[(path, digest)].expect_error or 'a score'}; rows for this path: {others})")
    lost = len(missing)
    duplicated = sum(len(found) - 1 for found in by_identity.values() if len(found) > 1)
    strangers = sum(len(found) for key, found in by_identity.items() if key not in landings)
    unexpected, replaced, misjudged = 0, 0, 0
    to_score: dict[str, list[tuple[dict, bytes]]] = defaultdict(list)
    for key, landing in landings.items():
        for row in by_identity.get(key, [])[:1]:
            if landing.expect_error is not None:
                misjudged += row["verdict"] != "ERROR" or landing.expect_error not in (row["error"] or "")
            elif row["verdict"] == "ERROR":
                if "replaced before it could be scored" in (row["error"] or ""):
                    replaced += 1  # overwritten while its bytes were lost to a kill -9
                else:
                    unexpected += 1
                    print(f"unexpected error row: {row['path']}: {row['error']}")
            else:
                to_score[row["model_version"]].append((row, landing.data))
    wrong_scores = 0
    store = ModelStore(plant.config.store_dir)
    for version, pairs in to_score.items():
        model = ProductModel.load(store, PRODUCT, version)
        prepared = [model.decode(data, row["path"])[1] for row, data in pairs]
        for (row, _), result in zip(pairs, model.score_images(prepared)):
            if abs(result.score - row["raw_score"]) > 1e-4 * max(1.0, abs(result.score)):
                wrong_scores += 1
                print(f"wrong score: {row['path']}: row {row['raw_score']}, bytes score {result.score}")
    return {"files dropped": len(landings), "rows": len(rows), "lost": lost, "duplicated": duplicated,
            "wrong": strangers + wrong_scores + misjudged, "error rows": sum(r["verdict"] == "ERROR" for r in rows),
            "unexpected errors": unexpected, "not scored (replaced)": replaced,
            "crashes": len(plant.crashes), "peak RSS (MB)": round(plant.peak_rss)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=3.0, help="files per second")
    parser.add_argument("--kills", type=int, default=4, help="kill -9s of the daemon")
    parser.add_argument("--fault-seconds", type=float, default=25.0, help="how long each lock or full disk lasts")
    parser.add_argument("--workdir", type=Path, help="keep everything here (default: a temporary folder)")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="inspectd-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    plant = Plant(work, args.fault_seconds)
    ledger = Ledger()
    for folder in plant.folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    end, stop_daemon = threading.Event(), threading.Event()
    supervisor = threading.Thread(target=plant.supervise, args=(stop_daemon,))
    supervisor.start()
    camera, faults = Camera(plant, ledger, args.rate), Faults(plant, ledger, args.kills)
    threads = [threading.Thread(target=camera.run, args=(end,)),
               threading.Thread(target=faults.run, args=(end, args.minutes * 60))]
    print(f"fault soak: {args.minutes:g} min, {args.rate:g} files/s, in {work} "
          f"(daemon {'without root file access' if plant.wrapper else 'as this user'})", flush=True)
    try:
        for thread in threads:
            thread.start()
        end.wait(args.minutes * 60)
    finally:
        end.set()
        for thread in threads:
            thread.join()
        rows = wait_for_rows(plant, ledger, timeout=180)
        plant.stopping = True
        stop_daemon.set()
        if plant.proc is not None and plant.proc.poll() is None:
            plant.proc.send_signal(signal.SIGTERM)
        supervisor.join()
        database = Path(plant.config.database_url.removeprefix("sqlite:///"))
        shutil.copy2(database, work / "final.db")  # the tmpfs goes away with the mount
        for point in plant.mounts:
            unmount(point)
    table = check(plant, ledger, rows)
    width = max(len(k) for k in table)
    print("\n" + "\n".join(f"{key:<{width}}  {value}" for key, value in table.items()))
    for crash in plant.crashes:
        print(f"crash: {crash}")
    failures = ("lost", "duplicated", "wrong", "unexpected errors", "crashes")
    return 0 if all(table[key] == 0 for key in failures) else 1


if __name__ == "__main__":
    sys.exit(main())
