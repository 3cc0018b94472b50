"""Time series data: ``.ts`` files (the UCR/UEA archive's format), CSV files, and the batches
the ``series`` adapter reads.

A batch: ``values`` ``(b, l, c)`` float32 (missing values and padding are 0), ``mask``
``(b, l, c)`` (1 where a value was observed), ``length`` ``(b,)``; ``label`` ``(b,)`` for
classification, ``target`` and ``target_mask`` ``(b, h, c)`` for forecasting.

Errors name the file, the line and the column (1-based) of what could not be read.
"""

from __future__ import annotations

import csv
import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sigerlm.errors import SigerError

MISSING = {"?", "", "nan", "NaN", "NA"}


class SeriesDataError(SigerError):
    """A data file that cannot be read; the message names the file, line and column."""


# -- .ts files ---------------------------------------------------------------------------------
@dataclass
class TsData:
    """Series ``(length_i, channels)`` float64 arrays (NaN: missing) with their labels."""

    path: Path
    series: list[np.ndarray]
    labels: list[str]
    class_names: list[str]
    problem: str = ""
    lines: list[int] = field(default_factory=list)  # the line of each series in the file

    @property
    def channels(self) -> int:
        return self.series[0].shape[1] if self.series else 0


def _number(token: str, path: Path, line: int, column: int, what: str) -> float:
    token = token.strip()
    if token in MISSING:
        return math.nan
    try:
        return float(token)
    except ValueError:
        raise SeriesDataError(f"{path}:{line}:{column}: {what}: cannot read {token!r} as a number") from None


def read_ts(path: str | Path) -> TsData:
    """Read a ``.ts`` file: ``@`` headers, then one series per line, channels separated by
    ``:``, values by ``,`` (``?`` is missing), the class label last when ``@classLabel true``."""
    path = Path(path)
    if not path.is_file():
        raise SeriesDataError(f"{path}: no such .ts file")
    header: dict[str, str] = {}
    class_names: list[str] = []
    has_labels, in_data = False, False
    series, labels, lines = [], [], []
    channels = None
    with path.open(encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                if not line.startswith("@"):
                    raise SeriesDataError(f"{path}:{number}:1: expected an @header or @data before the values")
                key, _, rest = line[1:].partition(" ")
                key = key.lower()
                if key == "data":
                    in_data = True
                elif key == "classlabel":
                    parts = rest.split()
                    has_labels = bool(parts) and parts[0].lower() == "true"
                    class_names = parts[1:] if has_labels else []
                elif key == "timestamps" and rest.strip().lower() == "true":
                    raise SeriesDataError(f"{path}:{number}:1: time-stamped .ts files are not supported")
                else:
                    header[key] = rest.strip()
                continue
            dims, columns, start = [], [], 0
            for part in raw.rstrip("\r\n").split(":"):
                dims.append(part)
                columns.append(start + 1)
                start += len(part) + 1
            label = None
            if has_labels:
                label = dims.pop().strip()
                columns.pop()
                if class_names and label not in class_names:
                    raise SeriesDataError(
                        f"{path}:{number}:{start - len(label)}: class {label!r} is not one of @classLabel {class_names}"
                    )
            if channels is None:
                channels = len(dims)
            elif len(dims) != channels:
                raise SeriesDataError(f"{path}:{number}:1: {len(dims)} dimensions, the first series has {channels}")
            values = []
            for d, (part, column) in enumerate(zip(dims, columns, strict=True)):
                row, offset = [], column
                for j, token in enumerate(part.split(",")):
                    row.append(_number(token, path, number, offset, f"dimension {d + 1}, value {j + 1}"))
                    offset += len(token) + 1
                values.append(row)
            length = max(len(r) for r in values)
            array = np.full((length, channels), np.nan)
            for d, row in enumerate(values):
                array[: len(row), d] = row
            series.append(array)
            labels.append(label if label is not None else "")
            lines.append(number)
    if not in_data:
        raise SeriesDataError(f"{path}: no @data line")
    if not series:
        raise SeriesDataError(f"{path}: no series after @data")
    if has_labels and not class_names:
        class_names = sorted(set(labels))
    return TsData(path, series, labels, class_names, header.get("problemname", path.stem), lines)


def aeon_data_folder() -> Path:
    """The folder of datasets bundled inside the installed aeon package (aeon is not imported)."""
    spec = importlib.util.find_spec("aeon")
    if spec is None or not spec.submodule_search_locations:
        raise SeriesDataError("aeon is not installed: `pip install aeon` for its bundled datasets, or give path")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def ts_path(name: str | None, path: str | None, split: str) -> Path:
    """The ``.ts`` file of a split: a bundled dataset by name, a file, or a pair NAME_TRAIN/TEST."""
    suffix = f"_{split.upper()}.ts"
    if name is not None:
        folder = aeon_data_folder() / name
        found = folder / f"{name}{suffix}"
        if not found.is_file():
            have = sorted(p.name for p in aeon_data_folder().iterdir() if any(p.glob(f"*{suffix}")))
            raise SeriesDataError(f"aeon bundles no dataset {name!r} with a {split} split; bundled: {', '.join(have)}")
        return found
    assert path is not None
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        candidates = sorted(p.glob(f"*{suffix}"))
        if len(candidates) == 1:
            return candidates[0]
        raise SeriesDataError(f"{p}: expected one *{suffix} file, found {len(candidates)}")
    pair = p.with_name(p.name + suffix)
    if pair.is_file():
        return pair
    raise SeriesDataError(f"{path}: no such .ts file (nor {pair})")


# -- CSV files ---------------------------------------------------------------------------------
def read_csv(path: str | Path, columns: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """The chosen columns of a CSV file as ``(steps, channels)`` float64 (empty cells: NaN).
    Without ``columns``, every column whose cells are all numbers (or empty)."""
    path = Path(path)
    if not path.is_file():
        raise SeriesDataError(f"{path}: no such CSV file")
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise SeriesDataError(f"{path}: empty file")
    names = [n.strip() for n in rows[0]]
    body = [(i + 2, r) for i, r in enumerate(rows[1:]) if any(cell.strip() for cell in r)]
    for line, row in body:
        if len(row) != len(names):
            raise SeriesDataError(f"{path}:{line}: {len(row)} cells, the header has {len(names)} columns")
    if columns is None:

        def numeric(j: int) -> bool:
            for _, row in body:
                try:
                    _number(row[j], path, 0, 0, "")
                except SeriesDataError:
                    return False
            return True

        columns = [n for j, n in enumerate(names) if numeric(j)]
        if not columns:
            raise SeriesDataError(f"{path}: no numeric column (columns: {', '.join(names)})")
    index = []
    for name in columns:
        if name not in names:
            raise SeriesDataError(f"{path}:1: no column {name!r} (columns: {', '.join(names)})")
        index.append(names.index(name))
    data = np.array(
        [[_number(row[j], path, line, j + 1, f"column {names[j]!r}") for j in index] for line, row in body],
        dtype=np.float64,
    ).reshape(len(body), len(index))
    return data, list(columns)


# -- batches -----------------------------------------------------------------------------------
def pad_batch(series: list[np.ndarray]) -> dict[str, Any]:
    """Series of different lengths -> ``values``, ``mask`` ``(b, l, c)`` and ``length`` ``(b,)``."""
    import torch

    length = max(s.shape[0] for s in series)
    channels = series[0].shape[1]
    values = np.zeros((len(series), length, channels), dtype=np.float32)
    mask = np.zeros_like(values)
    for i, s in enumerate(series):
        observed = np.isfinite(s)
        values[i, : len(s)] = np.where(observed, s, 0.0)
        mask[i, : len(s)] = observed
    return {
        "values": torch.from_numpy(values),
        "mask": torch.from_numpy(mask),
        "length": torch.tensor([len(s) for s in series], dtype=torch.long),
    }


class SeriesBatches:
    """Batches of examples, a different shard per rank: each global batch of
    ``batch_size * world_size`` examples, rank ``r`` takes ``r, r + world_size, ...``.
    Shuffled (seeded by the run's seed and the epoch) when ``shuffle``."""

    def __init__(self, examples: list[dict[str, Any]], batch_size: int, shuffle: bool, seed: int = 0,
                 rank: int = 0, world_size: int = 1, jitter: float = 0.0, prefixes: float = 0.0,
                 min_prefix: float = 0.1):  # fmt: skip
        if not examples:
            raise SeriesDataError("the dataset has no examples")
        self.examples, self.batch_size, self.shuffle = examples, batch_size, shuffle
        self.seed, self.rank, self.world_size, self.jitter = seed, rank, world_size, jitter
        self.prefixes, self.min_prefix = prefixes, min_prefix
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.examples) / (self.batch_size * self.world_size))

    def __iter__(self):
        import torch

        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.examples)) if self.shuffle else np.arange(len(self.examples))
        rows = self.batch_size * self.world_size
        for start in range(0, len(order), rows):
            picked = [self.examples[i] for i in order[start : start + rows][self.rank :: self.world_size]]
            if not picked:
                continue
            series = [e["series"] for e in picked]
            if self.jitter:
                series = [s + rng.normal(0, self.jitter, s.shape) * np.nanstd(s, axis=0) for s in series]
            if self.prefixes:  # early classification: a share of the series cut to a random prefix
                cut = rng.random(len(series)) < self.prefixes
                keep = rng.uniform(self.min_prefix, 1.0, len(series))
                series = [s[: max(1, round(f * len(s)))] if c else s for s, c, f in zip(series, cut, keep, strict=True)]
            batch = pad_batch(series)
            if "label" in picked[0]:
                batch["label"] = torch.tensor([e["label"] for e in picked], dtype=torch.long)
            if "target" in picked[0]:
                target = pad_batch([e["target"] for e in picked])
                batch["target"], batch["target_mask"] = target["values"], target["mask"]
            yield batch


class UcrDataset(SeriesBatches):
    """A classification split: ``data`` (the file read), ``class_names`` (the label order)."""

    def __init__(self, data: TsData, class_names: list[str], **kwargs: Any):
        index = {name: i for i, name in enumerate(class_names)}
        examples = []
        for series, label, line in zip(data.series, data.labels, data.lines or [0] * len(data.series), strict=True):
            if label not in index:
                raise SeriesDataError(f"{data.path}:{line}: class {label!r} is not one of the model's {class_names}")
            examples.append({"series": series, "label": index[label]})
        super().__init__(examples, **kwargs)
        self.data, self.class_names = data, class_names


class CsvWindows(SeriesBatches):
    """Forecasting windows of a CSV series: ``series`` ``(steps, c)``, ``columns``, ``train_end``
    (the steps before the holdout: MASE's scale comes from them)."""

    def __init__(self, series: np.ndarray, columns: list[str], train_end: int, origins: list[int],
                 window: int, horizon: int, **kwargs: Any):  # fmt: skip
        examples = [{"series": series[o - window : o], "target": series[o : o + horizon], "origin": o} for o in origins]
        super().__init__(examples, **kwargs)
        self.series, self.columns, self.train_end = series, columns, train_end
        self.window, self.horizon = window, horizon

    def mase_scale(self, season: int = 1) -> np.ndarray:
        """Per channel: the mean absolute error of the seasonal-naive forecast in the training part."""
        train = self.series[: self.train_end]
        if len(train) <= season:
            raise SeriesDataError(f"MASE with season {season} needs more than {season} training steps")
        return np.nanmean(np.abs(train[season:] - train[:-season]), axis=0)


def _run_classes(run: Any) -> list[str] | None:
    """The classes of the run's ``series`` adapter, if it has one (or the training data's, once
    the model took them)."""
    if run.state.get("series_classes") if hasattr(run, "state") else None:
        return list(run.state["series_classes"])
    try:
        options = run.component("model", "adapter").options
    except Exception:  # no model in the manifest
        return None
    classes = getattr(options, "classes", None)
    return list(classes) if classes else None


def ucr_for_run(run: Any, o: Any) -> UcrDataset:
    data = read_ts(ts_path(o.name, o.path, o.split))
    if o.limit is not None:
        data.series, data.labels, data.lines = data.series[: o.limit], data.labels[: o.limit], data.lines[: o.limit]
    classes = o.classes or _run_classes(run) or data.class_names
    shuffle = o.split == "train" if o.shuffle is None else o.shuffle
    train = o.split == "train"
    return UcrDataset(data, classes, batch_size=o.batch_size, shuffle=shuffle, seed=run.seed, rank=run.rank,
                      world_size=run.world_size, jitter=o.jitter if train else 0.0,
                      prefixes=o.prefixes if train else 0.0, min_prefix=o.min_prefix)  # fmt: skip


def csv_path(name: str | None, path: str | None) -> Path:
    """A CSV file, or the one of a series bundled inside aeon (``Airline``)."""
    if name is None:
        return Path(str(path))
    found = sorted((aeon_data_folder() / name).glob("*.csv"))
    if len(found) != 1:
        have = sorted(p.parent.name for p in aeon_data_folder().glob("*/*.csv"))
        raise SeriesDataError(f"aeon bundles no CSV series {name!r}; bundled: {', '.join(have)}")
    return found[0]


def csv_for_run(run: Any, o: Any) -> CsvWindows:
    path = csv_path(o.name, o.path)
    series, columns = read_csv(path, o.columns)
    n = len(series)
    train_end = n - o.holdout
    if o.split == "test":
        if not o.holdout:
            raise SeriesDataError(f"{path}: split 'test' needs a holdout (the last N steps)")
        origins = list(range(train_end, n - o.horizon + 1, o.horizon))
    else:
        end = train_end if o.split == "train" else n
        origins = list(range(o.window, end - o.horizon + 1, o.stride))
    origins = [t for t in origins if t >= o.window]
    if not origins:
        raise SeriesDataError(
            f"{path}: {n} steps (holdout {o.holdout}) leave no {o.split} window of {o.window} + {o.horizon} steps"
        )
    shuffle = o.split == "train" if o.shuffle is None else o.shuffle
    return CsvWindows(series, columns, train_end, origins, o.window, o.horizon, batch_size=o.batch_size,
                      shuffle=shuffle, seed=run.seed, rank=run.rank, world_size=run.world_size)  # fmt: skip
