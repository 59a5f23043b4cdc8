"""``trl-gram serve``: run the reward server ([`~serving.server.create_app`]); flags or ``--config serve.yaml``
(TRL's ``TrlParser`` over the judge's [`~trl_gram.judge.JudgeSpec`] and [`~serving.config.ServeConfig`]).

Examples::

    trl-gram serve --mode direct --group_size 8 --port 8000
    TRL_GRAM_API_KEY=... trl-gram serve --model PATH --host 0.0.0.0 --api_key_env TRL_GRAM_API_KEY
    trl-gram serve --backend vllm --model wangclnlp/GRAM-RR-LLaMA-3.1-8B-RewardModel --tensor_parallel_size 2
    trl-gram serve --backend openai --model PATH --engine_urls http://10.0.0.1:8000 http://10.0.0.2:8000 --group_size 8
"""

from __future__ import annotations

from ..judge.spec import JudgeSpec
from .config import ServeConfig

SERVE_HELP = "Serve a judge over HTTP (OpenRLHF --remote_rm_url, verl, RemoteGenerativeRewardFunction)."


def parse_serve_args(argv: list[str] | None = None) -> tuple[JudgeSpec, ServeConfig]:
    """The judge and server settings of a ``trl-gram serve`` command line (``argv`` without ``serve``)."""
    import sys

    from trl import TrlParser

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = TrlParser((JudgeSpec, ServeConfig), prog="trl-gram serve", allow_abbrev=False)
    flags = {a.split("=", 1)[0] for a in argv}
    if "--api_key" in flags or "--api-key" in flags:
        raise ValueError(
            "Pass the key through an environment variable: `--api_key_env NAME` (never on the command line)."
        )
    judge_args, config = parser.parse_args_and_config(argv)
    return judge_args, config


def judge_factory(spec: JudgeSpec):
    """A function loading the judge `spec` describes ([`~trl_gram.judge.load_judge`]; run in a background thread by
    the server)."""

    def load():
        from ..judge import load_judge

        return load_judge(spec)

    return load


def serve_main(argv: list[str] | None = None) -> int:
    """Entry point of ``trl-gram serve`` (``argv``: the arguments after ``serve``)."""
    import uvicorn

    from .server import create_app

    judge_args, config = parse_serve_args(argv)
    app = create_app(config=config, judge_factory=judge_factory(judge_args))
    uvicorn.run(app, host=config.host, port=config.port, log_level="info")
    return 0


def run(args) -> int:
    """``trl-gram serve`` from the top-level command table ([`trl_gram.cli`]): ``args.argv`` holds its tokens."""
    return serve_main(args.argv)
