"""The ``trl-gram`` console script.

Subcommands come from command modules. A command module exposes ``add_parser(subparsers)``, which registers one or
more subparsers, and ``run(args)``, which runs the chosen one with the parsed ``argparse.Namespace`` (a module can
also bind a handler per subparser with ``set_defaults(_run=handler)``). A subparser registered with
``add_help=False`` and ``set_defaults(_raw=True)`` receives its unparsed tokens in ``args.argv`` instead (the
``TrlParser``-based training commands do so, to read ``--config`` YAML files and dataclass fields).

Built-in modules are listed in :data:`COMMAND_MODULES`; a missing optional module is skipped. Other packages can add
commands through the ``trl_gram.commands`` entry-point group (each entry point names a command module).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import entry_points

COMMAND_MODULES: list[str] = [
    "trl_gram.training.cli",  # train, self-train, eval
    "trl_gram.serving.cli",  # serve (optional)
    "trl_gram.experiments.cli",  # reproduce
]


_UNAVAILABLE: dict[str, str] = {}


def register_command_module(name: str) -> None:
    """Add a command module (dotted path) to the ``trl-gram`` command line of this process."""
    if name not in COMMAND_MODULES:
        COMMAND_MODULES.append(name)


def _modules():
    names = list(COMMAND_MODULES)
    try:
        names += [ep.value for ep in entry_points(group="trl_gram.commands") if ep.value not in names]
    except Exception:  # noqa: BLE001  (broken metadata must not break the built-in commands)
        pass
    for name in names:
        try:
            yield importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is not None and name.startswith(e.name):
                continue  # the command module itself is absent
            if name == COMMAND_MODULES[0]:
                raise
            # An optional command whose extra dependencies are missing: the other commands still work.
            _UNAVAILABLE[name] = f"{e} (install the matching extra, e.g. `pip install trl-gram[serve]`)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trl-gram",
        description="Generative reward models (GRAM-R², GRAM) for TRL: train, self-train, evaluate and serve judges.",
        allow_abbrev=False,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _UNAVAILABLE.clear()
    for module in _modules():
        before = set(subparsers.choices)
        module.add_parser(subparsers)
        for name in set(subparsers.choices) - before:
            sub = subparsers.choices[name]
            if sub.get_default("_run") is None:
                if not hasattr(module, "run"):
                    raise TypeError(f"Command module {module.__name__} registers {name!r} but has no `run(args)`.")
                sub.set_defaults(_run=module.run)
    if _UNAVAILABLE:
        parser.epilog = "Unavailable commands: " + "; ".join(f"{k}: {v}" for k, v in _UNAVAILABLE.items())
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, _ = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if getattr(args, "_raw", False):
        args.argv = argv[argv.index(args.command) + 1 :]
    else:
        args = parser.parse_args(argv)
    result = args._run(args)
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
