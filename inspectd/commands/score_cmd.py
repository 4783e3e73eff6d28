"""`inspectd score --product X IMG...`: score images with the product's model."""

from __future__ import annotations

import argparse
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ..active import active_version, existing_database
from ..cli import print_json_lines, print_table
from ..config import Config
from ..device import resolve_device
from ..errors import ImageError
from ..heatmap import save_heatmap
from ..model import ProductModel
from ..prefetch import io_workers, prefetched_batches
from ..store import ModelStore


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("score", parents=[common], help="score images against a product model")
    parser.add_argument("--product", required=True)
    parser.add_argument("images", nargs="+", type=Path, help="image files")
    parser.add_argument("--version", help="model version (default: the active one, see `inspectd products`)")
    parser.add_argument("--json", action="store_true", help="one JSON object per image (JSON Lines)")
    parser.add_argument("--heatmap-dir", type=Path, help="write a heatmap overlay PNG per image here")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, config: Config) -> int:
    store = ModelStore(config.store_dir)
    version = args.version or _active(config, store, args.product)
    model = ProductModel.load(store, args.product, version, device=resolve_device(config.device))
    model.set_limits(config.images.max_bytes, config.images.max_pixels)
    names = heatmap_names(list(args.images))
    rows: list[dict] = []
    # Heatmaps are drawn and written in threads beside the next batch's scoring; at most
    # one batch waits to be written, so a long list of large images never piles up in memory.
    with ThreadPoolExecutor(max_workers=io_workers(), thread_name_prefix="heatmap") as writer:
        writing: list[Future] = []
        for batch in prefetched_batches(list(args.images), model.read, model.settings.batch_size):
            readable = []
            for path, decoded in batch:
                if isinstance(decoded, ImageError):
                    rows.append({"path": str(path), "product": model.product, "model_version": model.version,
                                 "error": str(decoded)})
                elif isinstance(decoded, Exception):
                    raise decoded
                else:
                    readable.append((path, *decoded))
            results = model.score_images([r[2] for r in readable], [str(r[0]) for r in readable])
            for future in writing:
                future.result()  # a heatmap that cannot be written stops the command
            writing = []
            for (path, original, _), result in zip(readable, results):
                row = {"path": str(path), "product": model.product, "model_version": model.version,
                       "score": result.score, "normalized_score": result.normalized_score,
                       "verdict": result.verdict, "threshold": result.threshold, "timings_ms": result.timings_ms}
                if args.heatmap_dir is not None:
                    target = args.heatmap_dir / names[path]
                    writing.append(writer.submit(save_heatmap, target, original, result.anomaly_map,
                                                 model.geometry, model.threshold))
                    row["heatmap"] = str(target)
                rows.append(row)
        for future in writing:
            future.result()
    order = {str(p): i for i, p in enumerate(args.images)}
    rows.sort(key=lambda r: order[r["path"]])
    if args.json:
        print_json_lines(rows)
    else:
        print_table([(r["path"], r.get("verdict", "ERROR"), r.get("score"), r.get("normalized_score"),
                      r.get("heatmap") or r.get("error", "")) for r in rows],
                    ("image", "verdict", "score", "normalized", "heatmap / error"))
    return 1 if any("error" in r for r in rows) else 0


def _active(config: Config, store: ModelStore, product: str) -> str:
    database = existing_database(config.database_url)
    try:
        return active_version(database, store, product).version
    finally:
        if database is not None:
            database.close()


def heatmap_names(paths: list[Path]) -> dict[Path, str]:
    """`<stem>_heatmap.png`, with the parent folder's name added where stems repeat."""
    stems = [p.stem for p in paths]
    return {p: (f"{p.parent.name}_{p.stem}" if stems.count(p.stem) > 1 else p.stem) + "_heatmap.png" for p in paths}
