"""Search benchmark (a script, not a test): the CPU's candidate stages side by side.

    python bench/search.py [--n-train 200] [--features /tmp/bank200.pt]

Enrolls `--n-train` bsdata good images (fp32, 10 % coreset; random weights) once and
keeps the bank and 8 test images' patch features in `--features` (a scratch file of
this script, never loaded by the product); then times, per image of 784 patches, the
exact fp32 search and the certified bound in fp32 and in bf16 at several projection
sizes and candidate counts, with the share of patches that needed the exact fallback
and whether the answers equal the exact ones.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import bench_enroll, pick_images  # noqa: E402
from inspectd.config import Config, ProductSettings  # noqa: E402
from inspectd.model import ProductModel  # noqa: E402
from inspectd.search import BankIndex, exact_nearest  # noqa: E402
from inspectd.store import ModelStore  # noqa: E402

PATCHES = 784


def bank_and_queries(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    if args.features.is_file():
        saved = torch.load(args.features)
        return saved["bank"], saved["queries"]
    work = Path(tempfile.mkdtemp(prefix="bench-search-"))
    train, test = pick_images(argparse.Namespace(images=None, n_train=args.n_train, n_test=8), work)
    settings = ProductSettings(backbone="wide_resnet50_2", weights="random", size=224, coreset_ratio=0.1,
                               precision="fp32")
    config = Config(store_dir=work / "models", device="cpu", defaults=settings)
    bench_enroll(config, train, work, "search")
    model = ProductModel.load(ModelStore(config.store_dir), "search", device=torch.device("cpu"))
    queries = model.features([model.read(p)[1] for p in test]).reshape(-1, model.index.bank.shape[1])
    torch.save({"bank": model.index.bank, "queries": queries}, args.features)
    return model.index.bank, queries


def per_image_ms(fn, images: float, repeats: int = 5):
    out = fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000 / images, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--features", type=Path, default=Path(tempfile.gettempdir()) / "inspectd-bench-search.pt")
    args = parser.parse_args()
    bank, queries = bank_and_queries(args)
    images = queries.shape[0] / PATCHES
    print(f"bank {tuple(bank.shape)}, {images:.0f} images of queries, {torch.get_num_threads()} threads, "
          f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}")
    mean = bank.mean(dim=0)
    exact_ms, (exact_dist, exact_index) = per_image_ms(lambda: exact_nearest(queries - mean, bank - mean), images, 1)
    print(f"exact fp32: {exact_ms:.1f} ms/image")
    for precision in ("fp32", "bf16"):
        for dim, candidates in ((128, 8), (128, 16), (64, 16), (32, 16)):
            index = BankIndex(bank, search_dim=dim, candidates=candidates, precision=precision)
            ms, (dist, found) = per_image_ms(lambda: index.nearest(queries), images)
            print(f"{precision} bound, {dim} axes, {candidates} candidates: {ms:.1f} ms/image, uncertified "
                  f"{index.stats.uncertified / index.stats.queries:.3%}, largest |distance - exact| "
                  f"{float((dist - exact_dist).abs().max()):.1e}, same row {float((found == exact_index).float().mean()):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
