"""Every command shown in a docstring, the README, docs/*.md or a recipe's comments parses with its command's
`TrlParser` (flags, choices, types, `--config` files; nothing is loaded or run), so a stale command fails CI."""

from __future__ import annotations

import argparse
import ast
import importlib.util
import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "trl_gram").rglob("*.py")),
    *sorted((ROOT / "examples").glob("*.py")),
    *sorted((ROOT / "recipes").glob("*.yaml")),
]
START = re.compile(
    r"(?:(?:trl-gram|-m trl_gram\.cli) (?:train|self-train|eval|serve)"
    r"|(?:python|accelerate launch)\b[^`\n]*?examples/[a-z_]+\.py)(?![\w:\"'])(?!\s*[|/])"
)
PLACEHOLDERS = {"N": "2", "PATH": "x", "PATH_OR_ID": "x", "NAME": "X"}
PLACEHOLDER = "PLACEHOLDER"  # a `<...>` in a command


def _commands(path: Path) -> list[tuple[str, int, str]]:
    """`(file, line, command)` for each command in `path`: continuation lines (`\\`) joined, cut at a closing backtick
    or a `#` comment."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found = []
    for n, line in enumerate(lines):
        if path.suffix == ".py" and line.strip().startswith(('"', "'", 'f"')):
            continue  # a string in code (a message, a help text), not a docstring
        for m in START.finditer(line):
            text, k = line[m.start() :], n
            while text.rstrip().endswith("\\") and k + 1 < len(lines):
                k += 1
                text = text.rstrip().rstrip("\\") + " " + lines[k].strip().lstrip("#").strip()
            text = re.split(r"`|\s#\s|\s#$|\s{2,}#", text)[0].strip().rstrip(").,;:")
            found.append((path.relative_to(ROOT).as_posix(), n + 1, text))
    return found


COMMANDS = [c for p in SOURCES for c in _commands(p)]


def _example_parser(script: str):
    """The `TrlParser` an example script builds under `if __name__ == "__main__":` (its dataclasses, found in the
    source), without running the script."""
    from trl import TrlParser

    path = ROOT / "examples" / script
    name = f"_example_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "TrlParser":
            types = [getattr(module, elt.id) for elt in node.args[0].elts]
            return TrlParser(types, allow_abbrev=False)
    raise AssertionError(f"{script} builds no TrlParser")


def _parser(tokens: list[str]):
    """The parser of a command and its own arguments."""
    from trl import ModelConfig, TrlParser

    from trl_gram.evaluation.cli import EvalArguments, _LenientJudgeSpec
    from trl_gram.judge import JudgeSpec
    from trl_gram.serving.config import ServeConfig
    from trl_gram.training.cli import SelfTrainScriptArguments, TrainScriptArguments
    from trl_gram.training.config import GramRewardConfig
    from trl_gram.training.self_training_config import SelfTrainingConfig

    script = next((t for t in tokens if re.fullmatch(r"(\S*/)?examples/[a-z_]+\.py", t)), None)
    if script is not None:
        rest = tokens[tokens.index(script) + 1 :]
        forwards = re.search(r'main\(\["([a-z-]+)"', (ROOT / "examples" / Path(script).name).read_text())
        if forwards is None:  # the script's own TrlParser
            return _example_parser(Path(script).name), rest
        command = forwards.group(1)  # a script that forwards to a `trl-gram` command
    else:
        i = next(i for i, t in enumerate(tokens) if t in ("train", "self-train", "eval", "serve"))
        command, rest = tokens[i], tokens[i + 1 :]
    types = {
        "train": (TrainScriptArguments, GramRewardConfig, ModelConfig),
        "self-train": (SelfTrainScriptArguments, SelfTrainingConfig, GramRewardConfig, ModelConfig),
        "eval": (EvalArguments, _LenientJudgeSpec),
        "serve": (JudgeSpec, ServeConfig),
    }[command]
    return TrlParser(types, allow_abbrev=False), rest  # no prefix matching: `--engine` is not `--engine_urls`


def _tokens(command: str) -> list[str]:
    command = re.sub(r"<[^>]*>", PLACEHOLDER, command)
    tokens = [t for t in shlex.split(command) if t not in ("...", "\\")]
    tokens = [t for t in tokens if not re.fullmatch(r"[A-Z_]+=\S*", t)]  # environment variables
    return [PLACEHOLDERS.get(t, t) for t in tokens]


def test_a_stale_command_fails(monkeypatch):
    with pytest.raises((AssertionError, SystemExit)):
        test_documented_command_parses("here", 1, "trl-gram serve --engine plain", monkeypatch)


def test_commands_are_found():
    commands = {c for _, _, c in COMMANDS}
    for needle in ("trl-gram eval", "trl-gram serve", "trl-gram train", "trl-gram self-train", "examples/"):
        assert any(needle in c for c in commands), needle


@pytest.mark.parametrize(("where", "line", "command"), COMMANDS, ids=[f"{w}:{n}" for w, n, _ in COMMANDS])
def test_documented_command_parses(where, line, command, monkeypatch):
    monkeypatch.chdir(ROOT)
    parser, argv = _parser(_tokens(command))
    if "--help" in argv or "-h" in argv:
        return
    argv = list(argv)
    unknown_in_config = []
    if "--config" in argv:
        k = argv.index("--config")
        assert k + 1 < len(argv), f"{where}:{line}: `--config` without a file in `{command}`"
        path = argv[k + 1]
        del argv[k : k + 2]
        if PLACEHOLDER not in path:  # a real recipe: it must exist and hold known keys only
            config = yaml.safe_load((ROOT / path).read_text())
            config.pop("env", None)
            unknown_in_config = parser.set_defaults_with_config(**config)
    # argparse itself: flag names, choices and types; the dataclasses (and their checks of the machine) are not built
    namespace, unknown = argparse.ArgumentParser.parse_known_args(parser, argv)
    assert not unknown, f"{where}:{line}: unknown arguments {unknown} in `{command}`"
    assert not unknown_in_config, f"{where}:{line}: unknown keys {unknown_in_config} in the config of `{command}`"


def test_every_recipe_named_in_the_docs_exists():
    named = {m for p in SOURCES for m in re.findall(r"recipes/[A-Za-z0-9_./-]+\.yaml", p.read_text(encoding="utf-8"))}
    assert named and not sorted(n for n in named if not (ROOT / n).is_file())
