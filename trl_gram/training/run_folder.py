"""The folder of a resumable run: atomic JSON and JSON-lines files, and the rule that says a stage is finished.

A stage is a sub-folder; it is finished once its ``summary.json`` exists (written last), and a finished stage is never
computed again. Inside a stage, a file written by [`RunFolder.cached`] (evaluations, predictions) is reused as well, so
that an interrupted stage resumes from its last finished step.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path


def write_json(path: str | Path, obj) -> None:
    """Write ``obj`` as JSON in one step: through a temporary file of this process, then renamed over ``path`` (so that
    several processes may share a folder and a reader never sees half a file)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: str | Path):
    return json.loads(Path(path).read_text())


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    """Write one JSON object per line, in one step (see [`write_json`])."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row, default=str) + "\n")
    os.replace(tmp, path)


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class RunFolder:
    """The stages of a resumable run under ``root``.

    Args:
        root (`str` or `Path`):
            Folder of the run; each stage is a sub-folder of it.
    """

    SUMMARY = "summary.json"

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def stage(self, name: str, create: bool = False) -> Path:
        d = self.root / name
        if create:
            d.mkdir(parents=True, exist_ok=True)
        return d

    def is_done(self, name: str) -> bool:
        return (self.root / name / self.SUMMARY).is_file()

    def summary(self, name: str) -> dict:
        return read_json(self.root / name / self.SUMMARY)

    def finish(self, name: str, summary: dict) -> dict:
        """Mark a stage finished with its summary (the stage's last write)."""
        write_json(self.stage(name, create=True) / self.SUMMARY, summary)
        return summary

    @staticmethod
    def cached(path: Path, compute: Callable[[], object], rows: bool = False):
        """The content of ``path`` when it exists, else ``compute()`` written there first (JSON, or JSON lines with
        ``rows=True``)."""
        if not path.is_file():
            value = compute()
            (write_jsonl if rows else write_json)(path, value)
        return read_jsonl(path) if rows else read_json(path)
