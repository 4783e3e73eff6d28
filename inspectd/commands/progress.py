"""A one-line progress bar on stderr (only when stderr is a terminal)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    def __init__(self, stream: TextIO | None = None, width: int = 30):
        # Looked up now, not at import: tests and callers may have replaced sys.stderr.
        self.stream, self.width = stream or sys.stderr, width
        self.interactive = self.stream.isatty()
        self.stage = ""
        self.last = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.interactive or (now - self.last < 0.1 and done < total and stage == self.stage):
            return
        if stage != self.stage and self.stage:
            self.stream.write("\n")
        self.stage, self.last = stage, now
        filled = int(self.width * done / max(1, total))
        self.stream.write(f"\r{stage:<22} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{total}")
        self.stream.flush()

    def close(self) -> None:
        if self.interactive and self.stage:
            self.stream.write("\n")
            self.stream.flush()
