"""InstEval benchmark: a full default fit of a large crossed gaussian model, checked against lme4.

``y ~ service + (1 | s) + (1 | d) + (1 | dept)`` on lme4's InstEval (73,421 ratings of
1128 lecturers by 2972 students, 14 departments), default settings (4 chains x 1000
draws after 1000 tuning steps, random seed 1).  Prints the wall time (build + compile +
sampling), the largest R-hat over every parameter and effect, divergences, and each
estimate beside lme4's maximum-likelihood value from ``references.json``; issue 6 asks for
fixed effects within 0.02, the residual, student and lecturer SDs within 5%, R-hat <= 1.01
and under 3 minutes on 2 cores.

Run: ``python bench/insteval.py [--seed N]``.  Results are appended to ``bench/results/insteval.csv``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import pandas as pd

import bayesglmm as bg

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
#: our parameter -> (lme4's name in references.json, kind of tolerance, tolerance)
CHECKS = {
    "Intercept": (("fixef", "Intercept"), "absolute", 0.02),
    "service[1]": (("fixef", "service1"), "absolute", 0.02),
    "sd(Intercept|s)": (("sd", "s"), "relative", 0.05),
    "sd(Intercept|d)": (("sd", "d"), "relative", 0.05),
    "sigma": (("sd", "Residual"), "relative", 0.05),
    "sd(Intercept|dept)": (("sd", "dept"), "none", float("nan")),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1, help="the fit's random_seed (default 1)")
    seed = parser.parse_args().seed
    ml = json.loads((DATA / "references.json").read_text())["models"]["insteval"]["ml"]
    df = pd.read_csv(DATA / "InstEval.csv", dtype={"s": str, "d": str, "dept": str, "service": str})
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.ConvergenceWarning)
        res = bg.GLMM("y ~ service + (1 | s) + (1 | d) + (1 | dept)", df).fit(random_seed=seed, progressbar=False)
    seconds = time.perf_counter() - start
    summary = res.summary()
    rows = []
    for name, ((kind, key), rule, tol) in CHECKS.items():
        mean, ref = float(summary.loc[name, "mean"]), ml[kind][key]
        error = abs(mean - ref) if rule == "absolute" else abs(mean / ref - 1)
        ok = "" if rule == "none" else ("yes" if error <= tol else "NO")
        rows.append({"parameter": name, "bayesglmm": mean, "lme4": ref, "rule": rule, "error": error, "within": ok})
        rows[-1].update(ess_bulk=float(summary.loc[name, "ess_bulk"]), r_hat=float(summary.loc[name, "r_hat"]))
    table = pd.DataFrame(rows)
    diag = res.diagnostics
    print(table.round(4).to_string(index=False))
    attrs = res.idata.attrs
    print(
        f"seed {seed}: {seconds:.1f} s ({'under' if seconds < 180 else 'OVER'} 3 minutes), sampler {attrs['sampler']}, "
        f"marginalised {bool(attrs['marginalized'])}, max R-hat {diag['max_rhat']:.4f} (all parameters and effects), "
        f"divergences {diag['divergences']}"
    )
    out = ROOT / "bench" / "results" / "insteval.csv"
    out.parent.mkdir(parents=True, exist_ok=True)  # bench/results is not in git
    record = {"seed": seed, "seconds": seconds, "max_rhat": diag["max_rhat"], "divergences": diag["divergences"]}
    record.update({f"{r['parameter']}": r["bayesglmm"] for r in rows}, date=time.strftime("%Y-%m-%d"))
    earlier = [pd.read_csv(out)] if out.exists() else []  # columns matched by name (older runs lack some)
    pd.concat([*earlier, pd.DataFrame([record])], ignore_index=True).to_csv(out, index=False)


if __name__ == "__main__":
    main()
