"""Scale benchmark: a simulated random-intercept logistic model with many rows.

Simulates ``rows`` patients in ``groups`` hospitals (default 1,000,000 in 10,000),

    logit P(y = 1) = -0.5 + 0.8 x + 0.4 z + u_hospital,   u ~ N(0, 0.7²),

with ``x`` continuous (so no rows collapse) and ``z`` binary, fits it with the default
settings (4 chains x 1000 draws after 1000 tuning steps unless told otherwise), then predicts every row
(conditional summary) and computes PSIS-LOO, all in chunks within ``predict.BUDGET``.
Prints the wall time of each step, the estimates against the truth, and the peak resident
memory of the process (``ru_maxrss``), next to the size a (draws x rows) array would take.
``ru_maxrss`` only grows, so the sampling's peak hides those of the later steps: each
step's own peak is also read from ``/proc/self/statm`` every 20 ms while it runs (Linux),
beside the memory the process held when the step began.

Run: ``python bench/scale.py [--rows 1000000] [--groups 10000] [--draws 1000] [--tune 1000]``.
Results are appended to ``bench/results/scale.csv``.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bayesglmm as bg  # noqa: E402

TRUTH = {"Intercept": -0.5, "x": 0.8, "z": 0.4, "sd(Intercept|hospital)": 0.7}


def simulate(rows: int, groups: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    hospital = rng.integers(0, groups, rows)
    x, z = rng.normal(size=rows), rng.integers(0, 2, rows)
    eta = TRUTH["Intercept"] + TRUTH["x"] * x + TRUTH["z"] * z + rng.normal(0, 0.7, groups)[hospital]
    y = (rng.random(rows) < 1 / (1 + np.exp(-eta))).astype(int)
    return pd.DataFrame({"y": y, "x": x, "z": z, "hospital": hospital.astype(str)})


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: kilobytes


def resident_gb() -> float:
    """This process's resident memory now (Linux), or NaN."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / 1024**3


class StepMemory:
    """Resident memory at the start of a ``with`` block and its largest value during it (polled)."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval, self.start_gb, self.peak_gb = interval, float("nan"), float("nan")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_gb = max(self.peak_gb, resident_gb())

    def __enter__(self) -> StepMemory:
        self.start_gb = self.peak_gb = resident_gb()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_gb = max(self.peak_gb, resident_gb())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--groups", type=int, default=10_000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    args = parser.parse_args()
    df = simulate(args.rows, args.groups)
    times, memory = {}, {}
    start = time.perf_counter()
    with StepMemory() as memory["fit"], warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.ConvergenceWarning)
        model = bg.GLMM("y ~ x + z + (1 | hospital)", df, family="bernoulli")
        res = model.fit(draws=args.draws, tune=args.tune, random_seed=1, progressbar=False)
    times["fit"] = time.perf_counter() - start
    start = time.perf_counter()
    with StepMemory() as memory["predict"]:
        pred = res.predict()
    times["predict"] = time.perf_counter() - start
    start = time.perf_counter()
    with StepMemory() as memory["loo"], warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loo = res.loo(pointwise=False)
    times["loo"] = time.perf_counter() - start
    s = res.summary().loc[list(TRUTH)]
    print(f"{args.rows} rows, {args.groups} groups; {res.diagnostics}")
    print(s[["mean", "sd", "ess_bulk", "r_hat"]].assign(truth=pd.Series(TRUTH)).round(4).to_string())
    draws_rows_gb = 4 * args.draws * args.rows * 8 / 1024**3
    print(f"predicted {len(pred)} rows; elpd_loo {float(loo['elpd_loo']):.1f}")
    print(", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
    print(f"peak resident memory {peak_gb():.2f} GB (a draws x rows array would be {draws_rows_gb:.1f} GB)")
    for step, m in memory.items():
        print(f"  {step}: {m.start_gb:.2f} GB at the start, peak {m.peak_gb:.2f} GB (+{m.peak_gb - m.start_gb:.2f})")
    stats = res.idata.sample_stats
    steps = float(stats["n_steps"].mean()) if "n_steps" in stats else float("nan")
    attrs = res.idata.attrs
    print(f"sampler {attrs['sampler']}, target_accept {attrs['target_accept']}, {steps:.1f} leapfrog steps per draw")
    row = {"rows": args.rows, "groups": args.groups, "draws": args.draws, "tune": args.tune, "leapfrog_steps": steps}
    row["centred"] = res.idata.attrs.get("centred_blocks", "")
    row["target_accept"] = res.idata.attrs.get("target_accept", float("nan"))
    row.update({f"{k}_s": v for k, v in times.items()})
    row.update({f"{k}_peak_gb": m.peak_gb for k, m in memory.items()})
    row.update(peak_gb=peak_gb(), max_rhat=res.diagnostics["max_rhat"], date=time.strftime("%Y-%m-%d"))
    out = ROOT / "bench" / "results" / "scale.csv"
    out.parent.mkdir(parents=True, exist_ok=True)  # bench/results is not in git
    table = pd.DataFrame([row])
    if out.exists():  # rows of earlier versions may have other columns: keep every column aligned
        table = pd.concat([pd.read_csv(out), table], ignore_index=True)
    table.to_csv(out, index=False)


if __name__ == "__main__":
    main()
