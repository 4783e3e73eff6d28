"""`inspectd enroll --product X DIR`: build or extend a product model."""

from __future__ import annotations

import argparse

from ..active import active_version
from ..cli import existing_dir, print_table
from ..config import Config
from ..crossfit import guarantee_note
from ..db import open_database
from ..enroll import EnrollReport, enroll
from ..identity import add_signer_option, quality_engineer
from ..lifecycle import activate, pin_active
from ..store import ModelStore
from .progress import ProgressBar


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("enroll", parents=[common], help="enroll a product from good images",
                            description="Build a new model version from good images (or extend the active "
                                        "one with --add), calibrating the threshold on held-out good images. "
                                        "The new version is active at once unless --candidate is given.")
    parser.add_argument("--product", required=True, help="product name")
    parser.add_argument("good_dir", type=existing_dir, help="folder of good images")
    parser.add_argument("--add", action="store_true", help="add these images to the current model version")
    parser.add_argument("--bad", type=existing_dir, metavar="DIR", help="known defect images to refine the threshold")
    parser.add_argument("--weights", help="imagenet, random (tests and demos only) or a local state-dict file")
    parser.add_argument("--candidate", action="store_true",
                        help="keep the new version as a candidate: the active version stays active until "
                             "`inspectd activate` (default: the new version is active at once)")
    add_signer_option(parser, "enrolls")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, config: Config) -> int:
    person = quality_engineer(config, args.by, "enroll a model")
    store = ModelStore(config.store_dir)
    with open_database(config.database_url) as db:
        before = active_version(db, store, args.product).version if store.versions(args.product) else None
        base = before if args.add else None  # --add extends the version in use, not merely the newest
        if args.candidate:  # without a record the new version would be active by being the newest
            pin_active(db, store, args.product, person.name, "pinned: inspectd enroll --candidate")
        bar = ProgressBar()
        try:
            report = enroll(config, args.product, args.good_dir, bad_dir=args.bad, weights=args.weights,
                            add=args.add, base_version=base, progress=bar,
                            on_estimate=lambda cost: print(f"cost: {cost.summary()}", flush=True))
        finally:
            bar.close()
        if not args.candidate:
            activate(db, store, args.product, report.version, person.name,
                     "inspectd enroll --add" if args.add else "inspectd enroll", fallback_previous=before)
    print_summary(report)
    print(f"{report.product} {report.version} is "
          + (f"a candidate; activate it with `inspectd activate --product {report.product} --version {report.version}`"
             if args.candidate else "the active version"))
    return 0


def print_summary(report: EnrollReport) -> None:
    cal = report.calibration
    rows = [
        ("product", report.product), ("version", report.version), ("model", report.path),
        ("images found", report.images_found), ("bank images", report.bank_images),
        ("calibration images", f"{report.calibration_images}"
                               + (f" (cross-fitted in {cal.folds} folds, also in the bank)" if cal.folds else
                                  " (held out of the bank)")),
        ("skipped", len(report.skipped)),
        ("bank size", f"{report.bank_size} x {report.feature_dim}"),
        ("threshold", f"{cal.threshold:.4f} ({cal.method}, false-alarm rate {cal.false_alarm_rate:g}"
                      f"{', guaranteed' if cal.guaranteed else ''})"),
        ("time", ", ".join(f"{k} {v:.1f}s" for k, v in report.timings_s.items())),
    ]
    if report.bad_images:
        rows.insert(6, ("defect images", report.bad_images))
    print_table(rows, ("enrollment", ""))
    print(f"threshold: {guarantee_note(cal.folds, cal.n_good, cal.false_alarm_rate, cal.guaranteed)}")
    for name, reason in report.skipped:
        print(f"skipped {name}: {reason}")
    for warning in report.warnings:
        print(f"WARNING: {warning}")
