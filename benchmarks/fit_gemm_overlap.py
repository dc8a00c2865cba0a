"""Fit the weight-GEMM soft roofline t = ((t_c/η_c)^p + (t_m/η_m)^p)^(1/p) to measured GEMM kernels.

Data: validation/kernels/gemm_shapes.toml (DeepGEMM's published H800 tables and capsim's own H200 calibration).
η_c is held at the class's compute_fraction (0.70); the fit gives η_m (-> gemm_tokens_efficiency = η_m / 0.85)
and p (-> gemm_overlap_exponent). Prints the fit, its errors, the plain roofline's errors for comparison and a
leave-one-source-out check. Usage: python benchmarks/fit_gemm_overlap.py
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent.parent / "validation" / "kernels" / "gemm_shapes.toml"
COMPUTE_FRACTION = 0.70
MEMORY_FRACTION = 0.85


def load(path: Path = DATA) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(t_compute at peak, t_memory at peak, measured time, source index) over every row, seconds."""
    tc, tm, t, src = [], [], [], []
    for i, table in enumerate(tomllib.loads(path.read_text())["table"]):
        for groups, m, n, k, value in table["rows"]:
            flops = 2.0 * groups * m * n * k
            weight = groups * n * k * table["weight_bytes"]
            moved = weight + groups * (m * k * table["activation_bytes"] + 2.0 * m * n)
            measured = flops / (value * 1e12) if table["measure"] == "tflops" else weight / (value * 1e9)
            tc.append(flops / (table["peak_tflops"] * 1e12))
            tm.append(moved / (table["peak_gb_s"] * 1e9))
            t.append(measured)
            src.append(i)
    return np.array(tc), np.array(tm), np.array(t), np.array(src)


def soft_roofline(
    tc: np.ndarray, tm: np.ndarray, eta_m: float, p: float, eta_c: float = COMPUTE_FRACTION
) -> np.ndarray:
    return ((tc / eta_c) ** p + (tm / eta_m) ** p) ** (1.0 / p)


def fit(tc: np.ndarray, tm: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """Least squares in log time over (η_m, p)."""
    from scipy.optimize import least_squares

    res = least_squares(
        lambda x: np.log(soft_roofline(tc, tm, x[0], x[1]) / t), [0.8, 2.0], bounds=([0.1, 1.0], [1.0, 50.0])
    )
    return float(res.x[0]), float(res.x[1])


def main() -> None:
    tc, tm, t, src = load()
    eta_m, p = fit(tc, tm, t)
    err = np.abs(soft_roofline(tc, tm, eta_m, p) / t - 1)
    plain = np.abs(np.maximum(tc / COMPUTE_FRACTION, tm / MEMORY_FRACTION) / t - 1)
    print(
        f"{len(t)} shapes; fit: eta_m = {eta_m:.3f} (gemm_tokens_efficiency = {eta_m / MEMORY_FRACTION:.3f}), "
        f"p = {p:.2f}"
    )
    print(f"soft roofline: median |error| {np.median(err):.1%}, max {err.max():.1%}")
    print(
        f"plain roofline max(t_c/0.70, t_m/0.85): median |error| {np.median(plain):.1%}, max {plain.max():.1%}"
    )
    for held in np.unique(src):
        train, test = src != held, src == held
        if train.sum() < 3:
            continue
        e_m, q = fit(tc[train], tm[train], t[train])
        e = np.abs(soft_roofline(tc[test], tm[test], e_m, q) / t[test] - 1)
        print(
            f"leave out table {held}: fit eta_m {e_m:.3f}, p {q:.2f} -> median |error| on it {np.median(e):.1%}"
        )


if __name__ == "__main__":
    main()
