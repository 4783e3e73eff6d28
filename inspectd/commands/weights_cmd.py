"""`inspectd weights export|check`: a backbone weights file for air-gapped line PCs."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import BACKBONES, Config
from ..weights import DEFAULT_VARIANT, check_weights, export_weights


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("weights", parents=[common], help="backbone weights files for machines without internet")
    actions = parser.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    export = actions.add_parser(
        "export", parents=[common], help="write a backbone's state dict and its sha256",
        description="On a machine that can download torchvision's weights: write the backbone's state dict "
                    "(loaded without executing code) to OUTPUT and its sha256 to OUTPUT.sha256. Copy both to "
                    "the line PC and set weights = \"/path/OUTPUT\" in its configuration.")
    export.add_argument("output", type=Path, metavar="OUTPUT", help="file to write, e.g. wide_resnet50_2.pth")
    export.add_argument("--backbone", choices=BACKBONES, default="wide_resnet50_2")
    export.add_argument("--from", dest="source", default="imagenet", metavar="SOURCE",
                        help="'imagenet' (torchvision's download or cache, the default), 'random' (tests only) "
                             "or a checkpoint file to re-export")
    export.add_argument("--variant", default=DEFAULT_VARIANT, help=f"torchvision weights name (default {DEFAULT_VARIANT})")
    export.add_argument("--seed", type=int, default=0, help="seed for --from random")
    export.set_defaults(handler=run_export, command_name="weights export")
    check = actions.add_parser("check", parents=[common], help="verify a copied weights file",
                               description="Verify FILE against FILE.sha256 and that it fits the backbone.")
    check.add_argument("file", type=Path, metavar="FILE")
    check.add_argument("--backbone", choices=BACKBONES, default="wide_resnet50_2")
    check.set_defaults(handler=run_check, command_name="weights check")


def run_export(args: argparse.Namespace, config: Config) -> int:
    exported = export_weights(args.backbone, args.output, args.source, variant=args.variant, seed=args.seed)
    print(f"wrote {exported.path} ({exported.size / 1e6:.1f} MB, {exported.tensors} tensors, {args.backbone} "
          f"from {exported.origin})")
    print(f"sha256 {exported.sha256} in {exported.checksum_path}")
    print(f"on the line PC: weights = \"/path/to/{exported.path.name}\" (keep {exported.checksum_path.name} beside it)")
    return 0


def run_check(args: argparse.Namespace, config: Config) -> int:
    digest = check_weights(args.file, args.backbone)
    print(f"{args.file}: OK ({args.backbone}, sha256 {digest})")
    return 0
