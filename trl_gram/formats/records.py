"""Rows of a data file, one reader for every command: `.json` (a list), `.jsonl`, `.csv`, `.parquet` (optionally
gzipped), a `save_to_disk` folder or a Hub dataset id; a malformed file raises a [`DataError`] naming the file and line.
"""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path


class DataError(ValueError):
    """A data file a user must fix: every problem names the file, the row and the column."""

    def __init__(self, path: str, problems: list[tuple[int | None, str | None, str]], total: int | None = None):
        self.path, self.problems = path, problems
        total = len(problems) if total is None else total
        lines = []
        for row, column, what in problems[:20]:
            where = ", ".join(
                p for p in (f"row {row}" if row is not None else "", f"column `{column}`" if column else "") if p
            )
            lines.append(f"  {path}: {where + ': ' if where else ''}{what}")
        more = f"\n  ... and {total - 20} more problem(s)" if total > 20 else ""
        super().__init__(f"{total} problem(s) in {path} (rows counted from 0):\n" + "\n".join(lines) + more)


def _from_datasets(path: str, split: str | None) -> list[dict]:
    """Rows of a ``save_to_disk`` folder, or of a Hub dataset (needs network)."""
    import datasets

    try:
        loaded = datasets.load_from_disk(path) if Path(path).is_dir() else datasets.load_dataset(path)
    except Exception as e:  # noqa: BLE001  (any loading failure is reported as the user's to fix)
        what = f"not a data file, a saved dataset or a reachable Hub dataset ({e})"
        raise DataError(path, [(None, None, what)]) from None
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded)
        if split is None and len(names) > 1:
            raise DataError(path, [(None, None, f"has the splits {names}; pick one with --split")])
        if split is not None and split not in loaded:
            raise DataError(path, [(None, None, f"has no split {split!r}; it has {names}")])
        loaded = loaded[split or names[0]]
    return loaded.to_list()


def read_records(path: str, split: str | None = None) -> list[dict]:
    """The rows of a ``.json`` (list), ``.jsonl``, ``.csv`` (every value a string) or ``.parquet`` file, optionally
    gzipped; of a ``save_to_disk`` folder; or of a Hub dataset id (``split`` picks its split). A malformed file raises
    a [`DataError`] naming the line."""
    p = Path(path)
    if p.is_dir():
        return _from_datasets(path, split)
    if not p.is_file():
        looks_like_file = path.startswith((".", "/")) or p.suffix in (".json", ".jsonl", ".gz", ".csv", ".parquet")
        if looks_like_file or path.count("/") != 1:
            raise DataError(path, [(None, None, "no such file")])
        return _from_datasets(path, split)
    name = p.name.lower()
    base = name[:-3] if name.endswith(".gz") else name
    if base.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(p).to_pylist()
    opener = gzip.open if name.endswith(".gz") else open
    with opener(p, "rt", encoding="utf-8", newline="") as f:
        if base.endswith(".csv"):
            return [dict(r) for r in csv.DictReader(f)]
        text = f.read()
    if base.endswith(".jsonl") or not text.lstrip().startswith("["):
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as e:
                    raise DataError(path, [(None, None, f"line {n} is not valid JSON ({e})")]) from None
        return rows
    try:
        data = json.loads(text)
    except ValueError as e:
        raise DataError(path, [(None, None, f"not valid JSON ({e})")]) from None
    if not isinstance(data, list):
        raise DataError(path, [(None, None, f"expected a JSON list of rows, got a {type(data).__name__}")])
    return data
