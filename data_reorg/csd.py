"""CMU Multimodal SDK "computational sequences" (``*.csd``): the HDF5 files that hold CMU-MOSEI labels.

Layout, as the SDK writes it (one top-level group, named by the sequence's root name)::

    <root>/data/<vid>/features    (N, D) float, one row per interval
    <root>/data/<vid>/intervals   (N, 2) float64, [start, end] in seconds
    <root>/metadata/<key>         (1,) variable-length str holding json.dumps(value)

Only h5py is needed: the SDK itself is not a dependency, and this module reads its files as they are.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from pathlib import Path

import h5py
import numpy as np

from data_reorg.io import atomic_path

CSD_DIMENSIONS = ("sentiment", "happy", "sad", "anger", "surprise", "disgust", "fear")
# The documented value range of each label dimension: sentiment -3..3, emotions 0..3 (rater means).
CSD_RANGES = {"sentiment": (-3.0, 3.0), **{name: (0.0, 3.0) for name in CSD_DIMENSIONS[1:]}}

# After SDK alignment every labelled interval becomes its own entry "<vid>[<k>]". Real video ids
# (YouTube ids, numeric ids) never contain brackets, so the suffix cannot be part of an id.
_ALIGNED_KEY = re.compile(r"^(?P<vid>.+)\[(?P<k>\d+)\]$")


class CSDError(ValueError):
    """A computational sequence file is missing, not HDF5, or lacks the groups the SDK writes."""


def write_csd(path: Path, labels: dict[str, tuple[np.ndarray, np.ndarray]], root_name: str = "All Labels") -> None:
    """Write ``labels`` (vid -> (features (N, 7), intervals (N, 2))) as the SDK would, atomically.

    ``md5`` is a digest of the data, and ``uuid`` is derived from it, so the same labels always give
    the same metadata (the demo corpus must be reproducible).
    """
    arrays = {vid: _checked_arrays(vid, features, intervals) for vid, (features, intervals) in labels.items()}
    digest = _data_md5(arrays)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        root = handle.create_group(root_name)
        data = root.create_group("data")
        for vid in sorted(arrays):
            entry = data.create_group(vid)
            entry.create_dataset("features", data=arrays[vid][0])
            entry.create_dataset("intervals", data=arrays[vid][1])
        metadata = root.create_group("metadata")
        for key, value in _metadata(root_name, digest).items():
            metadata.create_dataset(key, data=[json.dumps(value)], dtype=h5py.string_dtype())


def _checked_arrays(vid: str, features, intervals) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    intervals = np.asarray(intervals, dtype=np.float64)
    rows = len(features)
    if features.shape != (rows, len(CSD_DIMENSIONS)) or intervals.shape != (rows, 2):
        raise ValueError(
            f"{vid}: features must be (N, {len(CSD_DIMENSIONS)}) and intervals (N, 2), "
            f"got {features.shape} and {intervals.shape}"
        )
    return features, intervals


def _data_md5(arrays: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    digest = hashlib.md5()
    for vid in sorted(arrays):
        digest.update(vid.encode("utf-8"))
        for array in arrays[vid]:
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _metadata(root_name: str, digest: str) -> dict:
    return {
        "root name": root_name,
        "computational sequence description": "CMU-MOSEI sentiment and emotion labels per segment",
        "dimension names": list(CSD_DIMENSIONS),
        "computational sequence version": "1.0",
        "alignment compatible": True,
        "dataset name": "CMU-MOSEI",
        "dataset version": "1.0",
        "creator": "data_reorg",
        "contact": "",
        "featureset bib citation": "",
        "dataset bib citation": "",
        "uuid": str(uuid.uuid3(uuid.NAMESPACE_OID, f"{root_name}:{digest}")),
        "md5": digest,
    }


def interval_problem(start: float, end: float) -> str | None:
    """Why a CSD interval cannot be matched to anything (not finite, empty or reversed); None if it can."""
    if not (math.isfinite(start) and math.isfinite(end)):
        return "interval is not finite"
    if end < start:
        return "interval ends before it starts"
    return "interval is empty" if end == start else None


def label_problem(values) -> str | None:
    """Why a labels row (CSD_DIMENSIONS order) cannot be trusted: a NaN / infinite value or one outside
    its dimension's range (CSD_RANGES), named; None if every value is usable."""
    for name, value in zip(CSD_DIMENSIONS, values):
        low, high = CSD_RANGES[name]
        if not math.isfinite(value):
            return f"{name} is {value}"
        if not low <= value <= high:
            return f"{name} {value} is outside [{low:g}, {high:g}]"
    return None


def read_csd(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """vid -> (features, intervals) of the FIRST top-level group, as the SDK opens it.

    Aligned entries ``<vid>[<k>]`` (one interval each) are merged back under ``<vid>``, ordered by
    ``k`` after any plain ``<vid>`` rows, so callers always see one entry per video. Row order carries
    no meaning for callers anyway: labels are matched to segments by time.
    """
    path = Path(path)
    if not path.is_file():
        raise CSDError(f"{path}: computational sequence file is missing")
    try:
        with h5py.File(path, "r") as handle:
            return _read_data_group(path, _data_group(path, handle))
    except OSError as error:
        raise CSDError(f"{path}: not a readable HDF5 computational sequence ({error})") from error


def _data_group(path: Path, handle: h5py.File) -> h5py.Group:
    roots = list(handle.keys())
    if not roots:
        raise CSDError(f"{path}: no top-level group (expected one such as 'All Labels')")
    data = handle[roots[0]].get("data") if isinstance(handle[roots[0]], h5py.Group) else None
    if not isinstance(data, h5py.Group):
        raise CSDError(f"{path}: top-level group {roots[0]!r} has no 'data' group")
    return data


def _read_data_group(path: Path, data: h5py.Group) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    parts: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {}
    for key in data.keys():
        aligned = _ALIGNED_KEY.match(key)
        vid, order = (aligned["vid"], int(aligned["k"])) if aligned else (key, -1)
        parts.setdefault(vid, []).append((order, *_read_entry(path, data, key)))
    merged = {}
    for vid, entries in parts.items():
        entries.sort(key=lambda entry: entry[0])
        merged[vid] = (np.concatenate([entry[1] for entry in entries]), np.concatenate([entry[2] for entry in entries]))
    return merged


def _read_entry(path: Path, data: h5py.Group, key: str) -> tuple[np.ndarray, np.ndarray]:
    entry = data[key]
    if not (isinstance(entry, h5py.Group) and "features" in entry and "intervals" in entry):
        raise CSDError(f"{path}: entry {key!r} lacks 'features' or 'intervals'")
    features = np.asarray(entry["features"][()], dtype=np.float64)
    intervals = np.asarray(entry["intervals"][()], dtype=np.float64)
    if features.ndim != 2 or intervals.shape != (len(features), 2):
        raise CSDError(
            f"{path}: entry {key!r} has features {features.shape} and intervals "
            f"{intervals.shape}; expected (N, D) and (N, 2)"
        )
    return features, intervals
