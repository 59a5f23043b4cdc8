"""The repository's layout: the package exports what its type-checking block declares, research code stays out of
the package, and the docs hold pages rather than run outputs."""

from __future__ import annotations

import ast
import importlib
import subprocess
import tomllib
from pathlib import Path

import pytest

import trl_gram

ROOT = Path(__file__).resolve().parents[1]


def _type_checking_imports() -> dict[str, str]:
    tree = ast.parse((ROOT / "trl_gram" / "__init__.py").read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", None) == "TYPE_CHECKING")
    return {alias.name: node.module for node in block.body for alias in node.names}


def test_type_checking_block_mirrors_every_export():
    assert _type_checking_imports() == trl_gram._EXPORTS


@pytest.mark.parametrize("name", sorted(trl_gram._EXPORTS))
def test_every_export_resolves_to_its_module(name):
    module = importlib.import_module(f"trl_gram.{trl_gram._EXPORTS[name]}")
    assert getattr(trl_gram, name) is getattr(module, name)


def test_the_package_holds_no_research_code():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["tool"]["setuptools"]["packages"]["find"]["include"] == ["trl_gram*"]
    assert not (ROOT / "trl_gram" / "experiments").exists()
    assert any(d.lower().startswith("pyyaml") for d in config["project"]["dependencies"])


def _tracked(*paths: str) -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", *paths], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return out.stdout.split()


def test_docs_are_pages_and_no_run_output_is_tracked():
    docs = _tracked("docs")
    assert docs and all(p.endswith((".md", ".png", ".svg")) for p in docs), docs
    outputs = [p for p in _tracked() if Path(p).name == "DONE" or p.endswith((".jsonl", ".jsonl.gz"))]
    assert outputs == ["trl_gram/data/demo_pairs.jsonl"]  # the package's own demo data only
    assert not [p for p in _tracked("benchmarks") if p.startswith("benchmarks/results/")]


README = (ROOT / "README.md").read_text()


def test_readme_is_short_and_starts_with_the_two_commands():
    assert len(README.splitlines()) <= 200
    head = README.split("## ")[0]
    assert "./setup.sh && .venv/bin/python examples/judge_demo.py" in head
    assert "OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q" in head


def _links(path: Path) -> list[str]:
    import re

    text = path.read_text()
    return [m.split("#")[0] for m in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in m and not m.startswith("#")]


@pytest.mark.parametrize(
    "page", ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))]
)
def test_links_of_the_readme_and_docs_resolve(page):
    base = (ROOT / page).parent
    missing = [link for link in _links(ROOT / page) if not (base / link).exists()]
    assert not missing, missing


def test_files_named_in_the_readme_exist():
    import re

    named = set(re.findall(r"(?:examples|recipes|research/reproduction/configs)/[\w./-]+\.(?:py|yaml)", README))
    assert named and not [p for p in named if not (ROOT / p).is_file()]


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of the trl_gram modules a file imports (relative imports resolved)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            names |= {module} | {f"{module}.{a.name}" for a in node.names}
    return {n for n in names if n.startswith("trl_gram")}


@pytest.mark.parametrize(("package", "other"), [("training", "evaluation"), ("evaluation", "training")])
def test_training_and_evaluation_do_not_import_each_other(package, other):
    """Both read data through `trl_gram.formats`; neither imports the other."""
    offenders = {
        p.relative_to(ROOT).as_posix(): sorted(m for m in _imported_modules(p) if m.startswith(f"trl_gram.{other}"))
        for p in (ROOT / "trl_gram" / package).glob("*.py")
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_no_two_modules_or_public_names_alike():
    """`load_judge`, `MODES`, `REFERENCES`, `summarize` and `aggregate` each name one thing."""
    for name in ("load_judge", "MODES", "REFERENCES", "summarize", "aggregate"):
        defined = []
        for p in (ROOT / "trl_gram").rglob("*.py"):
            tree = ast.parse(p.read_text())
            for node in tree.body:
                targets = [node.name] if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else []
                if isinstance(node, ast.Assign):
                    targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
                if name in targets:
                    defined.append(p.relative_to(ROOT).as_posix())
        assert len(defined) <= 1, (name, defined)
    assert not (ROOT / "trl_gram" / "training" / "evaluation.py").exists()
    assert not (ROOT / "trl_gram" / "training" / "data.py").exists()
