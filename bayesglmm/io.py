"""Save a fit to one file and load it back.

The file is a zip archive holding ``posterior.nc`` (the InferenceData as
netCDF), ``spec.json`` (formula, family, link, priors, na_action) and the
modelled rows of the data, column by column, in ``data.npz`` (numbers kept
bit for bit) with categorical and string columns described in
``spec.json``.  Loading rebuilds the model from the same formula and data,
so summaries and predictions are identical.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import ArgumentError
from .priors import Prior
from .stats import az

FORMAT = "bayesglmm-fit-1"


def _encode_data(frame: pd.DataFrame) -> tuple[dict[str, np.ndarray], list[dict]]:
    arrays, columns = {}, []
    for i, (name, col) in enumerate(frame.items()):
        key = f"c{i}"
        if isinstance(col.dtype, pd.CategoricalDtype):
            arrays[key] = col.cat.codes.to_numpy()
            columns.append(
                {
                    "name": name,
                    "kind": "categorical",
                    "key": key,
                    "ordered": bool(col.cat.ordered),
                    "categories": [c.item() if hasattr(c, "item") else c for c in col.cat.categories],
                }
            )
        elif pd.api.types.is_numeric_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype):
            arrays[key] = col.to_numpy()
            columns.append({"name": name, "kind": "array", "key": key})
        else:
            columns.append({"name": name, "kind": "strings", "values": [str(v) for v in col]})
    return arrays, columns


def _decode_data(arrays, columns: list[dict], index: list) -> pd.DataFrame:
    data = {}
    for col in columns:
        if col["kind"] == "categorical":
            data[col["name"]] = pd.Categorical.from_codes(
                arrays[col["key"]], categories=col["categories"], ordered=col["ordered"]
            )
        elif col["kind"] == "array":
            data[col["name"]] = arrays[col["key"]]
        else:
            data[col["name"]] = np.array(col["values"], dtype=object)
    return pd.DataFrame(data, index=index)


def _priors_to_json(priors: dict) -> list:
    return [
        {"key": list(k) if isinstance(k, tuple) else k, "dist": p.dist, "params": dict(p.params)}
        for k, p in priors.items()
    ]


def _priors_from_json(items: list) -> dict:
    return {
        (tuple(i["key"]) if isinstance(i["key"], list) else i["key"]): Prior(i["dist"], tuple(i["params"].items()))
        for i in items
    }


def save(res, path: str | os.PathLike) -> None:
    """Write ``res`` (a GLMMResults) to ``path``."""
    model = res.model
    arrays, columns = _encode_data(model.design.data)
    spec = {
        "format": FORMAT,
        "formula": model.formula,
        "family": model.family.name,
        "link": model.link.name,
        "na_action": model.na_action,
        "priors": _priors_to_json(model.user_priors),
        "columns": columns,
        "index": [i.item() if hasattr(i, "item") else i for i in model.design.data.index],
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with tempfile.TemporaryDirectory() as tmp:
        nc = Path(tmp) / "posterior.nc"
        res.idata.to_netcdf(str(nc))
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.write(nc, "posterior.nc")
            zf.writestr("spec.json", json.dumps(spec))
            zf.writestr("data.npz", buffer.getvalue())


def load(path: str | os.PathLike):
    """Read a fit written by :meth:`GLMMResults.save`."""
    from .glmm import GLMM
    from .results import GLMMResults

    try:
        zf = zipfile.ZipFile(path)
    except (FileNotFoundError, zipfile.BadZipFile) as exc:
        raise ArgumentError(f"cannot read a bayesglmm fit from {str(path)!r}: {exc}") from exc
    with zf, tempfile.TemporaryDirectory() as tmp:
        spec = json.loads(zf.read("spec.json"))
        if spec.get("format") != FORMAT:
            raise ArgumentError(f"{str(path)!r} is not a {FORMAT} file")
        arrays = np.load(io.BytesIO(zf.read("data.npz")), allow_pickle=False)
        data = _decode_data(arrays, spec["columns"], spec["index"])
        zf.extract("posterior.nc", tmp)
        idata = az.from_netcdf(str(Path(tmp) / "posterior.nc"))
        idata.load()
    model = GLMM(
        spec["formula"],
        data,
        family=spec["family"],
        link=spec["link"],
        priors=_priors_from_json(spec["priors"]) or None,
        na_action=spec["na_action"],
        eval_env=1,  # the caller of load(): where the formula's own functions are
    )
    return GLMMResults(model, idata, warn=False)
