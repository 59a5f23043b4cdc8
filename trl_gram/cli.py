"""The ``trl-gram`` console script: a plain table of the built-in commands, each dispatched to its module.

    trl-gram train --config recipes/gram_v1_finetune.yaml
    trl-gram self-train --config recipes/gram_r2_cpu_smoke.yaml
    trl-gram eval --data pairs.jsonl --mode direct
    trl-gram serve --model PATH_OR_ID --port 8000

Every command receives its own tokens (``args.argv``, everything after the command name) and reads them with its own
parser: [`~trl.TrlParser`] for the training commands (flags or ``--config x.yaml``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass

from .evaluation.cli import EVAL_HELP
from .training.cli import SELF_TRAIN_HELP, TRAIN_HELP


@dataclass(frozen=True)
class Command:
    """One ``trl-gram`` command.

    Args:
        module (`str`):
            Module holding the command's handler.
        handler (`str`):
            Function of `module` that runs the command: `handler(args)`, with `args.argv` the command's tokens.
        help (`str`):
            One line for `trl-gram --help`.
        extra (`str`, *optional*):
            The pip extra the command needs; its absence is reported with the install command.
        needs (`tuple[str, ...]`, *optional*):
            Modules of `extra` imported first: one that is missing means that `extra` is not installed.
    """

    module: str
    handler: str
    help: str
    extra: str | None = None
    needs: tuple[str, ...] = ()


COMMANDS: dict[str, Command] = {
    "train": Command("trl_gram.training.cli", "run_train", TRAIN_HELP),
    "self-train": Command("trl_gram.training.cli", "run_self_train", SELF_TRAIN_HELP),
    "eval": Command("trl_gram.evaluation.cli", "run_eval", EVAL_HELP),
    "serve": Command(
        "trl_gram.serving.cli",
        "run",
        "Serve a judge over HTTP (OpenRLHF, verl, RemoteGenerativeRewardFunction).",
        extra="serve",
        needs=("fastapi", "uvicorn"),
    ),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {c.help}" for name, c in COMMANDS.items()]
    return (
        "usage: trl-gram COMMAND [ARGS ...]\n\n"
        "Generative reward models (GRAM-R², GRAM) for TRL: train, self-train, evaluate and serve judges.\n\n"
        "commands:\n" + "\n".join(lines) + "\n\nRun `trl-gram COMMAND --help` for the options of a command.\n"
    )


def _handler(name: str):
    command = COMMANDS[name]
    try:
        for dependency in command.needs:
            importlib.import_module(dependency)
        module = importlib.import_module(command.module)
    except ModuleNotFoundError as e:
        if command.extra and e.name and not e.name.startswith("trl_gram"):
            raise SystemExit(
                f"`trl-gram {name}` needs the `{command.extra}` extra: pip install 'trl-gram[{command.extra}]' ({e})"
            ) from e
        raise
    return getattr(module, command.handler)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        sys.stderr.write(_usage() + f"\ntrl-gram: error: unknown command {name!r}; choose from {list(COMMANDS)}.\n")
        return 2
    result = _handler(name)(argparse.Namespace(command=name, argv=rest))
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
