"""Every report that keeps a results table rebuilds, by the command written on the page, to the committed page."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from research.reproduction.harness import cli

ROOT = Path(__file__).resolve().parents[3]
REPORTS = ROOT / "research" / "reproduction" / "reports"
TABLES = sorted(REPORTS.glob("*/results.json"))


def _rebuild_command(page: str) -> list[str]:
    block = re.search(r"## Commands\n.*?```bash\n(.*?)\n```", page, re.S)
    assert block, "the page has no command block under ## Commands"
    tokens = shlex.split(block.group(1))
    assert tokens[:3] == ["python", "-m", "research.reproduction.harness"], tokens
    return tokens[3:]


def test_some_reports_keep_a_results_table():
    assert {t.parent.name for t in TABLES} >= {"reproduction_gpu", "reproduction_gpu_compare_small"}


@pytest.mark.parametrize("table", TABLES, ids=[t.parent.name for t in TABLES])
def test_report_rebuilds_byte_identical_from_its_results_table(table, tmp_path, monkeypatch):
    page = table.parent.with_suffix(".md")
    committed = page.read_text()
    argv = _rebuild_command(committed)
    assert "--report-only" in argv and "--results" in argv
    # A copy of the configs and of this report (page, notes, results table), at the same paths under a fresh root.
    rel = page.relative_to(ROOT)
    shutil.copytree(ROOT / "research" / "reproduction" / "configs", tmp_path / "research/reproduction/configs")
    shutil.copytree(table.parent, tmp_path / rel.with_suffix(""))
    (tmp_path / rel).write_text("stale\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 0
    assert (tmp_path / rel).read_text() == committed


def test_restore_writes_finished_arm_folders_a_run_skips(tmp_path):
    from research.reproduction.harness.report import load_results, read_results, restore_results

    table = REPORTS / "reproduction_gpu_compare_small" / "results.json"
    results, _ = read_results(table)
    assert restore_results(table, tmp_path) == len(results)
    assert restore_results(table, tmp_path) == 0  # folders already there are left alone
    assert load_results(tmp_path) == sorted(results, key=lambda r: (r["task"], r["arm"], r["seed"]))
