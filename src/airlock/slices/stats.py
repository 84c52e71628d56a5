"""The test behind the slice finder: is a slice's failure rate higher than the rest's, beyond chance?

The p-value is the Chernoff-Hoeffding bound on a binomial's upper tail, P(X >= f) <= exp(-n KL(f/n || p)),
with p the rest of the traffic's rate: an upper bound, so the test errs on the side of silence, and
unlike a normal approximation it stays valid for small slices and rare failures (a z-test called 15
failures in 197 spans at a 2% base rate significant among ~10^5 slices; the bound does not). Bonferroni's
correction multiplies it by the number of slices that could have been reported. Impact is excess
failures: the failures the slice had beyond what the rest's rate predicts for its size."""

from __future__ import annotations

import numpy as np


def excess(f_s: np.ndarray, n_s: np.ndarray, f_total: int, n_total: int) -> np.ndarray:
    """Failures beyond what the rest of the traffic's rate predicts for a slice of this size."""
    n_rest = np.maximum(n_total - n_s, 1)
    rate_rest = (f_total - f_s) / n_rest
    return f_s - n_s * rate_rest


def p_values(f_s: np.ndarray, n_s: np.ndarray, f_total: int, n_total: int) -> np.ndarray:
    """Upper bounds on the one-sided p-values that each slice's rate exceeds the rest's."""
    f_s = np.asarray(f_s, dtype=np.float64)
    n_s = np.maximum(np.asarray(n_s, dtype=np.float64), 1.0)
    n_rest = np.maximum(n_total - n_s, 1.0)
    p = np.clip((f_total - f_s) / n_rest, 1e-12, 1 - 1e-12)
    r = np.clip(f_s / n_s, 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(r > 0, r * np.log(np.where(r > 0, r, 1.0) / p), 0.0) + np.where(
            r < 1, (1 - r) * np.log(np.where(r < 1, 1 - r, 1.0) / (1 - p)), 0.0
        )
    return np.where(r > p, np.exp(-n_s * kl), 1.0)
