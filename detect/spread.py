"""The mean of repeated measurements with its spread and standard error."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def mean_and_error(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation and standard error of the mean (None below two values)."""
    n = len(values)
    sd = statistics.stdev(values) if n > 1 else None
    return {"n": n, "mean": statistics.fmean(values), "sd": sd, "standard_error": sd / math.sqrt(n) if sd is not None else None}
