"""`inspectd eval DATASET`: accuracy of product models on a labelled dataset."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from ..backbone import RANDOM_WEIGHTS_WARNING
from ..cli import existing_dir, print_table
from ..config import Config
from ..device import resolve_device
from ..errors import ProductNameError, UsageError
from ..evaluation.dataset import LAYOUT_HELP, Category, discover
from ..evaluation.enrolling import enroll_category
from ..evaluation.evaluate import Evaluation, evaluate
from ..evaluation.report import write_report
from ..evaluation.summary import TABLE_HEADER, results_json, table_rows
from ..model import ProductModel
from ..naming import validate_product_name
from ..store import ModelStore
from .progress import ProgressBar


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "eval", parents=[common], help="measure model accuracy on a labelled dataset",
        description=f"Score a labelled dataset and report image AUROC, pixel AUROC, AUPRO (to 30% FPR) and, at "
                    f"the model's threshold, F1, miss rate and false-alarm rate. DATASET: {LAYOUT_HELP}.")
    parser.add_argument("dataset", type=existing_dir, metavar="DATASET", help="dataset folder")
    parser.add_argument("--product", help="product name (default: the category folder's name; one category only)")
    parser.add_argument("--enroll", action="store_true",
                        help="enroll first: from train/good (MVTec), or from a seeded half of good/ (plain layout)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--report", type=Path, metavar="DIR", help="write an HTML report with plots into DIR")
    parser.add_argument("--version", help="model version to evaluate (default: the latest; not with --enroll)")
    parser.add_argument("--weights", help="with --enroll: imagenet, random (tests and demos only) or a state-dict file")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, config: Config) -> int:
    if args.enroll and args.version:
        raise UsageError("eval: --version cannot be used with --enroll (which makes a new version)")
    if args.weights and not args.enroll:
        raise UsageError("eval: --weights only applies with --enroll")
    categories, ignored = discover(args.dataset)
    if args.product and len(categories) > 1:
        raise UsageError("eval: --product needs a single category; a folder of categories uses the folder names")
    device = resolve_device(config.device)
    bar = ProgressBar(sys.stderr)  # not the default: it is bound to the stderr of import time
    try:
        evaluations = [_evaluate_category(args, config, category, device, bar) for category in categories]
    finally:
        bar.close()
    for evaluation in evaluations:
        if evaluation.weights == "random":
            print(f"inspectd: WARNING: {evaluation.product}: {RANDOM_WEIGHTS_WARNING}", file=sys.stderr)
    report = write_report(args.report, evaluations, args.dataset, config.images.max_pixels) if args.report else None
    if args.json:
        print(json.dumps(results_json(evaluations), allow_nan=False))
        for name in ignored:
            print(f"inspectd: ignored folder {name}: no recognisable layout", file=sys.stderr)
    else:
        print_table(table_rows(evaluations), TABLE_HEADER)
        _print_notes(evaluations, ignored)
    if report is not None:
        print(f"report: {report}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _evaluate_category(args: argparse.Namespace, config: Config, category: Category, device: torch.device,
                       bar: ProgressBar) -> Evaluation:
    """Enroll (with --enroll), load the model and score the category."""
    product = args.product or _product_name(category)
    samples, notes, version = category.samples, [], args.version
    clock = time.perf_counter()
    if args.enroll:
        enrolled = enroll_category(config, category, product, args.weights, bar)
        samples, version = enrolled.samples, enrolled.report.version
        notes.append(enrolled.note)
        if enrolled.report.estimate is not None:
            notes.append(f"estimated before enrollment: {enrolled.report.estimate.summary()}")
        if enrolled.report.calibration.warning:
            notes.append(f"calibration: {enrolled.report.calibration.warning}")
    enroll_s = time.perf_counter() - clock
    model = ProductModel.load(ModelStore(config.store_dir), product, version, device=device)
    model.set_limits(config.images.max_bytes, config.images.max_pixels)
    clock = time.perf_counter()
    evaluation = evaluate(model, samples, category.name, bar)
    eval_s = time.perf_counter() - clock
    timing = f"scored {len(evaluation.samples)} images in {eval_s:.1f} s"
    if args.enroll:
        timing = f"enrollment {enroll_s:.1f} s, {timing}"
    evaluation.notes[:0] = notes + [f"model {model.product} {model.version}, weights {model.weights.source}, "
                                    f"threshold {model.threshold:.4f}; {timing}"]
    return evaluation


def _product_name(category: Category) -> str:
    try:
        return validate_product_name(category.name)
    except ProductNameError as exc:
        raise ProductNameError(f"category folder {category.root}: {exc}; name the product with --product") from None


def _print_notes(evaluations: list[Evaluation], ignored: list[str]) -> None:
    for evaluation in evaluations:
        for note in evaluation.notes:
            print(f"{evaluation.category}: {note}")
        for path, reason in evaluation.skipped:
            print(f"{evaluation.category}: skipped {path}: {reason}")
    for name in ignored:
        print(f"ignored folder {name}: no recognisable layout")
