"""The file format of a fitted ``BayesianGaussianMixture``: one data tree, no pickle.

Stage 6 of the Bayesian pipeline (... -> estimator -> **files**). A saved model is its
``idata_`` (posterior, sample statistics, observed and constant data, EM estimate,
pointwise log-likelihood) with the estimator's configuration as JSON in the tree's
attributes, written as zarr (a directory) or netCDF (a ``.nc`` file). Loading rebuilds
the PyMC model from the stored data and configuration, so nothing else is needed.

Writes go to a temporary sibling first and are renamed into place, so a failed save
never leaves a half-written file, and never destroys what was at the path before.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path

__all__ = ["FORMAT_VERSION", "read_tree", "replace_path", "write_tree"]

# 2: the PyMC model's own variables (Bartlett / Gamma precisions) and groups.
FORMAT_VERSION = 2
_NETCDF_SUFFIXES = (".nc", ".h5", ".netcdf")


def write_tree(tree, config, path):
    """Write ``tree`` with ``config`` (JSON-able dict) in its attributes to ``path``.

    Returns
    -------
    Path
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(
            f"Cannot save to '{path}': the folder '{parent}' does not exist. Create it first."
        )
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tree = tree.copy()
    tree.attrs = {"bayes_gmm": json.dumps(config)}
    try:
        if path.suffix in _NETCDF_SUFFIXES:
            tree.to_netcdf(tmp, engine="h5netcdf")
        else:
            tree.to_zarr(tmp, consolidated=False)
        replace_path(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            if tmp.is_dir():
                shutil.rmtree(tmp)
            else:
                tmp.unlink()
    return path


def read_tree(path):
    """Read a tree written by :func:`write_tree`.

    Returns
    -------
    tree : xarray.DataTree
        Loaded into memory (the file is closed).
    config : dict
    """
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No saved model at '{path}'.")
    engine = "h5netcdf" if path.is_file() else "zarr"
    kwargs = {} if engine == "h5netcdf" else {"consolidated": False}
    with xr.open_datatree(path, engine=engine, **kwargs) as opened:
        tree = opened.load()
    try:
        config = json.loads(tree.attrs["bayes_gmm"])
    except KeyError:
        raise ValueError(f"'{path}' was not written by BayesianGaussianMixture.save.") from None
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"'{path}' was saved in bayes_gmm's format {version}; this version reads format "
            f"{FORMAT_VERSION}. Refit the model and save it again."
        )
    return tree, config


def replace_path(tmp, path):
    """Move ``tmp`` to ``path``, replacing what is there only once ``tmp`` is complete."""
    if path.is_dir():
        old = path.with_name(f".{path.name}.{uuid.uuid4().hex}.old")
        os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.replace(old, path)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)
