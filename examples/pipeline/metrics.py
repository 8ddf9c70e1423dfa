"""Quality metrics from sums, so one allreduce gives every rank the global figures.

MAE, MSE, bias and R^2 are all functions of six sums (count, sum |e|, sum e^2, sum e,
sum y, sum y^2 with e = prediction - truth); NMAD needs a median and is per rank only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

SUM_FIELDS = ("count", "sum_abs_err", "sum_sq_err", "sum_err", "sum_true", "sum_sq_true")


def error_sums(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """The six sums (float64, in SUM_FIELDS order) for one batch or one rank."""
    pred = np.asarray(pred, dtype=np.float64).ravel()
    true = np.asarray(true, dtype=np.float64).ravel()
    err = pred - true
    return np.array(
        [err.size, np.abs(err).sum(), (err**2).sum(), err.sum(), true.sum(), (true**2).sum()],
        dtype=np.float64,
    )


def metrics_from_sums(sums: Sequence[float]) -> dict[str, Any]:
    """count, mae, mse, bias, r2 (None where undefined: no samples or constant truth)."""
    count, s_abs, s_sq, s_err, s_y, s_y2 = (float(v) for v in sums)
    if count <= 0:
        return {"count": 0, "mae": None, "mse": None, "bias": None, "r2": None}
    total_var = s_y2 - s_y * s_y / count
    r2 = 1.0 - s_sq / total_var if total_var > 1e-12 else None
    return {
        "count": round(count),
        "mae": s_abs / count,
        "mse": s_sq / count,
        "bias": s_err / count,
        "r2": r2,
    }


def nmad(pred: np.ndarray, true: np.ndarray) -> float | None:
    """Normalised median absolute deviation of dz/(1+z), the photo-z community's scatter."""
    pred = np.asarray(pred, dtype=np.float64).ravel()
    true = np.asarray(true, dtype=np.float64).ravel()
    if pred.size == 0:
        return None
    dz = (pred - true) / (1.0 + true)
    return float(1.4826 * np.median(np.abs(dz - np.median(dz))))
