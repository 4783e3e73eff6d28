"""Numeric precision of the backbone: which one a product asks for, which one this
machine can run, and the autocast context that runs it (method.md section 5).

`auto` means bfloat16 on a CPU with native bf16 matrix instructions (AMX-BF16 or
AVX512-BF16, read from the CPU's own flags, never guessed from its name), float16 on
CUDA and float32 otherwise. A model records the precision its features (and so its
threshold) were computed in; scoring uses the same where the device can, and says so
when it cannot.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import ContextManager, Iterable

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo names of native bf16 matrix instructions
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision to run, and why it differs from the one asked for (empty if it does not)."""

    precision: str
    fallback: str = ""


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty where there is no /proc/cpuinfo)."""
    try:
        text = cpuinfo.read_text(encoding="ascii", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_bf16_features() -> tuple[str, ...]:
    """This CPU's native bf16 matrix instructions, e.g. ("amx_bf16", "avx512_bf16")."""
    return bf16_features_of(cpu_flags(), torch.backends.cpu.get_cpu_capability())


def bf16_features_of(flags: Iterable[str], torch_capability: str = "") -> tuple[str, ...]:
    """bf16 features from kernel flags, or from torch's own CPU capability when the
    kernel does not list flags (torch says "AMX_BF16"/"AVX512_BF16" on recent builds)."""
    flags = set(flags)
    found = tuple(flag for flag in CPU_BF16_FLAGS if flag in flags)
    if not found and "BF16" in torch_capability.upper():
        found = (torch_capability.lower(),)
    return found


def device_supports(precision: str, device: torch.device, bf16_features: tuple[str, ...] | None = None) -> bool:
    """Whether `device` runs `precision` natively (fp32 runs everywhere)."""
    if precision == "fp32":
        return True
    if device.type == "cuda":
        return precision == "fp16" or (precision == "bf16" and torch.cuda.is_bf16_supported())
    features = cpu_bf16_features() if bf16_features is None else bf16_features
    return precision == "bf16" and bool(features)


def resolve_precision(requested: str, device: torch.device, bf16_features: tuple[str, ...] | None = None
                      ) -> PrecisionChoice:
    """The precision a new enrollment runs in, for the product setting `requested`."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}")
    if requested == "auto":
        if device.type == "cuda":
            return PrecisionChoice("fp16")
        return PrecisionChoice("bf16" if device_supports("bf16", device, bf16_features) else "fp32")
    return scoring_precision(requested, device, bf16_features)


def scoring_precision(enrolled: str, device: torch.device, bf16_features: tuple[str, ...] | None = None
                      ) -> PrecisionChoice:
    """The precision to score a model enrolled in `enrolled` with on `device`."""
    if device_supports(enrolled, device, bf16_features):
        return PrecisionChoice(enrolled)
    where = "this CPU has no native bf16 instructions" if device.type == "cpu" else f"{device} cannot run it"
    return PrecisionChoice("fp32", f"enrolled in {enrolled} but {where}: scoring in fp32; the threshold was "
                                   f"calibrated on {enrolled} features, re-enroll on this machine to match")


def enrolled_precision(metadata: dict, device: torch.device) -> str:
    """The precision a stored model's features were computed in. Models from before
    precision was recorded ran fp16 on CUDA and fp32 on the CPU."""
    recorded = metadata.get("precision", {}).get("enrolled")
    if recorded in PRECISIONS[1:]:
        return recorded
    return "fp16" if device.type == "cuda" else "fp32"


def autocast(precision: str, device: torch.device) -> ContextManager:
    """The autocast context that runs the trunk in `precision` (none for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])
