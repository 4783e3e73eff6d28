"""inspectd: PatchCore visual inspection for factory lines."""

__version__ = "0.1.0"
