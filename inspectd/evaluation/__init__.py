"""Accuracy evaluation of product models on labelled datasets (`inspectd eval`).

dataset: layouts and labelled samples; enrolling: --enroll; evaluate: scoring and
masks; measures: metrics; summary: table and JSON; plots and report: --report.
"""

from __future__ import annotations

from .dataset import Category, DatasetError, Sample, discover
from .evaluate import Evaluation, evaluate, load_mask
from .measures import Metrics, compute_metrics

__all__ = ["Category", "DatasetError", "Evaluation", "Metrics", "Sample", "compute_metrics", "discover",
           "evaluate", "load_mask"]
