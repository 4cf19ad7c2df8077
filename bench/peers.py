"""Speed benchmark: bayesglmm against bambi, measured in the same run on the same machine.

For each model: wall time of build + compile + sampling (4 chains x 1000 draws after 1000
tuning steps), the smallest bulk ESS over the fixed effects and the variance parameters
(random-effect SDs, correlations, family parameters; not the random effects themselves),
ESS per second, max R-hat and divergences; then the ratio of our ESS/s to the best of
bambi's samplers.  bambi runs in its own interpreter (``--bambi-python``, a virtual
environment where ``pip install bambi`` was run; bayesglmm never imports it).  Every
fit, ours and the peers', runs in a fresh subprocess and is timed there after the
imports, so that each pays its own compilation and starts with cold in-memory caches
(a fit after another one in the same process skips e.g. the loading of PyTensor's
compiled-module index: 2.7 s with this machine's cache).

Compiled code is cached on disk by every tool (PyTensor's C modules, numba's and JAX's
caches).  Each fit is therefore first run once untimed, to fill the caches, so that what is
measured is a user's refit, not the compiler; then ``--repeats`` times (3), and the run of
median wall time is reported (on a shared 2-core machine one run of the same fit varied
from 3.0 to 4.8 s).  All fits of a run share one PyTensor compile directory, new for the run
(``--compiledir`` keeps one): the index of compiled modules that every fresh process
loads grows with everything ever compiled in a directory: 0.05-0.1 s with the ~160
modules of cbpp and sleepstudy and their peers, 2.2-4 s with a development machine's
~980, for bambi and for us alike.  It would otherwise measure the machine's history.  ``--cold`` times the first
run instead.  bayesglmm also stores its compiled sampling functions in that directory
(``bayesglmm/_fncache.py``), keyed by the model's form, not the values of its data: a
warm run loads them and skips PyTensor's rewriting, as a re-run script would.
``--no-function-cache`` makes every run of ours compile them, as a first fit of a new
model does (the C modules still come from the cache).  ``--second-fit`` times, in every
process, a fit that follows an untimed one of the same model on other data (the rows
without the first), as a notebook's next fit does: what each tool does once per process
(importing setuptools, loading its compiled modules, tracing) is then paid.  Our second
fit then loads the functions the first stored (same form); with ``--no-function-cache``
it compiles them.

Run: ``python bench/peers.py --bambi-python /path/to/venv/bin/python [--models cbpp sleepstudy]``.
Results are appended to ``bench/results/peers.csv``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

# name: (csv, categorical columns, derived columns, bayesglmm formula, bambi formula, family)
MODELS = {
    "cbpp": (
        "cbpp.csv",
        ["period", "herd"],
        {},
        "p(incidence, size) ~ period + (1 | herd)",
        "p(incidence, size) ~ period + (1 | herd)",
        "binomial",
    ),
    "contraception": (
        "Contraception.csv",
        ["district"],
        {"age2": "age**2"},
        "use[Y] ~ age + I(age**2) + urban + livch + (1 + urban | district)",
        "use[Y] ~ age + age2 + urban + livch + (1 + urban | district)",
        "bernoulli",
    ),
    "sleepstudy": (
        "sleepstudy.csv",
        ["Subject"],
        {},
        "Reaction ~ Days + (Days | Subject)",
        "Reaction ~ Days + (Days | Subject)",
        "gaussian",
    ),
    "grouseticks": (
        "grouseticks.csv",
        ["YEAR", "BROOD", "INDEX", "LOCATION"],
        {},
        "TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)",
        "TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)",
        "poisson",
    ),
    "verbagg": (
        "VerbAgg.csv",
        ["id", "item"],
        {},
        "r2[Y] ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)",
        "r2[Y] ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)",
        "bernoulli",
    ),
}

#: Columns of bench/results/peers.csv, whatever a run reports.
COLUMNS = ["model", "tool", "seconds", "min_ess", "max_rhat", "divergences", "ess_per_s", "error", "date"]

BAMBI_SCRIPT = r"""
import json, sys, time, warnings
import numpy as np, pandas as pd, arviz as az, bambi as bmb
warnings.simplefilter("ignore")
spec = json.loads(sys.argv[1])
df = pd.read_csv(spec["csv"]).astype({c: str for c in spec["categorical"]})
for name, expr in spec["derived"].items():
    df[name] = df.eval(expr)
def fit(data):
    model = bmb.Model(spec["formula"], data, family=spec["family"])
    return model.fit(draws=1000, tune=1000, chains=4, inference_method=spec["sampler"], random_seed=1,
                     progressbar=False)
if spec["second"]:  # the timed fit is this process's second, of other data
    fit(df.iloc[1:])
start = time.perf_counter()
idata = fit(df)
seconds = time.perf_counter() - start
names = [v for v in idata.posterior.data_vars
         if ("|" not in v or v.endswith("_sigma") or "_corr" in v) and not v.endswith("_offset")
         and idata.posterior[v].ndim <= 3 and v not in ("mu", "p")]
s = az.summary(idata, var_names=names, kind="diagnostics")
div = int(idata.sample_stats["diverging"].sum()) if "diverging" in idata.sample_stats else -1
print("RESULT" + json.dumps({"seconds": seconds, "min_ess": float(s["ess_bulk"].min()),
                             "max_rhat": float(s["r_hat"].max()), "divergences": div}))
"""


def _frame(name: str) -> pd.DataFrame:
    csv, categorical, derived, *_ = MODELS[name]
    df = pd.read_csv(DATA / csv).astype({c: str for c in categorical})
    for column, expr in derived.items():
        df[column] = df.eval(expr)
    return df


OURS_SCRIPT = r"""
import json, sys, time, warnings
import bayesglmm as bg
sys.path.insert(0, sys.argv[2])
from peers import MODELS, _frame
name = sys.argv[1]
_, _, _, formula, _, family = MODELS[name]
df = _frame(name)
def fit(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bg.GLMM(formula, data, family=family).fit(random_seed=1, progressbar=False)
if sys.argv[3] == "second":  # the timed fit is this process's second, of other data
    fit(df.iloc[1:])
start = time.perf_counter()
res = fit(df)
seconds = time.perf_counter() - start
s = res.summary()
print("RESULT" + json.dumps({"seconds": seconds, "min_ess": float(s["ess_bulk"].min()),
                             "max_rhat": float(s["r_hat"].max()),
                             "divergences": res.diagnostics["divergences"]}))
"""


def _environment(compiledir: str) -> dict[str, str]:
    """This process's environment with PyTensor's compile directory set to ``compiledir``."""
    env = dict(os.environ)
    flags = [f for f in env.get("PYTENSOR_FLAGS", "").split(",") if f and not f.startswith("base_compiledir=")]
    env["PYTENSOR_FLAGS"] = ",".join([*flags, f"base_compiledir={compiledir}"])
    return env


#: Set by :func:`main`: the environment of every fit (its PyTensor compile directory),
#: whether the first, cache-filling run is timed, how many timed runs there are,
#: whether our fits may load their stored sampling functions, and whether the timed
#: fit is its process's second.
SETTINGS = {"env": None, "cold": False, "repeats": 3, "functions": True, "second": False}


def _run(command: list[str], timeout: float, extra_env: dict | None = None) -> dict:
    """Run one fit in fresh interpreters and read the ``RESULT`` line each prints.

    With ``--cold`` the first run is timed, alone.  Otherwise an untimed run of the same
    fit comes first (see the module docstring); of the ``repeats`` timed runs, the one of
    median wall time is returned, with every run's time in ``runs``.  A failed run is
    returned as it is.
    """
    if SETTINGS["cold"]:  # later runs would find the caches filled
        return _run_once(command, timeout, extra_env)
    _run_once(command, timeout, extra_env)
    results = []
    for _ in range(SETTINGS["repeats"]):
        result = _run_once(command, timeout, extra_env)
        if "error" in result:
            return result
        results.append(result)
    results.sort(key=lambda r: r["seconds"])
    return {**results[len(results) // 2], "runs": [round(r["seconds"], 2) for r in results]}


def _run_once(command: list[str], timeout: float, extra_env: dict | None = None) -> dict:
    env = SETTINGS["env"] if extra_env is None else {**SETTINGS["env"], **extra_env}
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"seconds": np.nan, "min_ess": np.nan, "max_rhat": np.nan, "divergences": -1, "error": "timeout"}
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT")]
    if not lines:
        return {"seconds": np.nan, "min_ess": np.nan, "max_rhat": np.nan, "divergences": -1, "error": out.stderr[-300:]}
    return json.loads(lines[-1][len("RESULT") :])


def ours(name: str, timeout: float) -> dict:
    """A default bayesglmm fit (seed 1) in a fresh interpreter."""
    # without stored functions, every run compiles its sampling functions, as for new data
    extra_env = None if SETTINGS["functions"] else {"BAYESGLMM_FUNCTION_CACHE": "0"}
    second = "second" if SETTINGS["second"] else "first"
    return _run([sys.executable, "-c", OURS_SCRIPT, name, str(ROOT / "bench"), second], timeout, extra_env)


def bambi(name: str, sampler: str, python: str, timeout: float) -> dict:
    csv, categorical, derived, _, formula, family = MODELS[name]
    spec = {
        "csv": str(DATA / csv),
        "categorical": categorical,
        "derived": derived,
        "formula": formula,
        "family": family,
        "sampler": sampler,
        "second": SETTINGS["second"],
    }
    return _run([python, "-c", BAMBI_SCRIPT, json.dumps(spec)], timeout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bambi-python", required=True, help="interpreter of an environment with bambi installed")
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--samplers", nargs="*", default=["pymc", "nutpie", "numpyro"])
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per peer fit")
    parser.add_argument("--compiledir", help="PyTensor compile directory of every fit (default: new for the run)")
    parser.add_argument("--cold", action="store_true", help="time the first run of each fit (no warm-up run)")
    parser.add_argument("--repeats", type=int, default=3, help="timed warm runs per fit; the median is reported")
    parser.add_argument(
        "--no-function-cache",
        action="store_true",
        help="our fits compile their sampling functions in every run, as for new data (BAYESGLMM_FUNCTION_CACHE=0)",
    )
    parser.add_argument(
        "--second-fit",
        action="store_true",
        help="time each process's second fit, after an untimed one of the data without their first row",
    )
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    compiledir = args.compiledir or tempfile.mkdtemp(prefix="bayesglmm-bench-pytensor-")
    SETTINGS.update(
        env=_environment(compiledir),
        cold=args.cold,
        repeats=args.repeats,
        functions=not args.no_function_cache,
        second=args.second_fit,
    )
    what = "cold" if args.cold else "warm"
    stored = "stored" if SETTINGS["functions"] else "compiled in every run"
    print(f"PyTensor compile directory: {compiledir}; {what} runs timed ({args.repeats} when warm)", flush=True)
    print(f"bayesglmm's sampling functions: {stored}", flush=True)
    if args.second_fit:
        print("timed: each process's second fit, after one of the data without their first row", flush=True)
    rows = []
    for name in args.models:
        rows.append({"model": name, "tool": "bayesglmm", **ours(name, args.timeout)})
        print(rows[-1], flush=True)
        for sampler in args.samplers:
            rows.append(
                {"model": name, "tool": f"bambi-{sampler}", **bambi(name, sampler, args.bambi_python, args.timeout)}
            )
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    table["ess_per_s"] = table["min_ess"] / table["seconds"]
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    table.assign(date=time.strftime("%Y-%m-%d")).reindex(columns=COLUMNS).to_csv(
        ROOT / "bench" / "results" / "peers.csv",
        mode="a",
        index=False,
        header=not (ROOT / "bench/results/peers.csv").exists(),
    )
    summary = []
    for name, group in table.groupby("model", sort=False):
        mine = group[group["tool"] == "bayesglmm"].iloc[0]
        peers = group[group["tool"] != "bayesglmm"]
        ok = peers[(peers["max_rhat"] <= 1.01) & (peers["divergences"] == 0)]
        best = ok.loc[ok["ess_per_s"].idxmax()] if len(ok) else None
        summary.append(
            {
                "model": name,
                "ours ESS/s": mine["ess_per_s"],
                "ours R-hat": mine["max_rhat"],
                "ours div": mine["divergences"],
                "best peer (converged)": best["tool"] if best is not None else "none converged",
                "peer ESS/s": best["ess_per_s"] if best is not None else np.nan,
                "ratio": mine["ess_per_s"] / best["ess_per_s"] if best is not None else np.nan,
            }
        )
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(3).to_string(index=False))
        print()
        print(pd.DataFrame(summary).round(2).to_string(index=False))


if __name__ == "__main__":
    sys.exit(main())
