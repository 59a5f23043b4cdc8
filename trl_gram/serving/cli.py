"""``trl-gram serve``: run the reward server ([`~serving.server.create_app`]); flags or ``--config serve.yaml``
(TRL's ``TrlParser`` over [`~serving.config.ServeJudgeArguments`] and [`~serving.config.ServeConfig`]).

Examples::

    trl-gram serve --mode direct --group_size 8 --port 8000
    TRL_GRAM_API_KEY=... trl-gram serve --model PATH --host 0.0.0.0 --api_key_env TRL_GRAM_API_KEY
    trl-gram serve --backend vllm --model wangclnlp/GRAM-RR-LLaMA-3.1-8B-RewardModel --tensor_parallel_size 2
    trl-gram serve --backend openai --model PATH --engine_urls http://10.0.0.1:8000 http://10.0.0.2:8000 --group_size 8
"""

from __future__ import annotations

from .config import ServeConfig, ServeJudgeArguments

SERVE_HELP = "Serve a judge over HTTP (OpenRLHF --remote_rm_url, verl, RemoteGenerativeRewardFunction)."


def parse_serve_args(argv: list[str] | None = None) -> tuple[ServeJudgeArguments, ServeConfig]:
    """The judge and server settings of a ``trl-gram serve`` command line (``argv`` without ``serve``)."""
    import sys

    from trl import TrlParser

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = TrlParser((ServeJudgeArguments, ServeConfig), prog="trl-gram serve")
    flags = {a.split("=", 1)[0] for a in argv}
    if "--api_key" in flags or "--api-key" in flags:
        raise ValueError(
            "Pass the key through an environment variable: `--api_key_env NAME` (never on the command line)."
        )
    judge_args, config = parser.parse_args_and_config(argv)
    return judge_args, config


def judge_factory(args: ServeJudgeArguments):
    """A function loading the judge described by ``args`` (run in a background thread by the server)."""
    options = dict(
        mode=args.mode,
        template=args.template,
        swap=args.swap,
        max_new_tokens=args.max_new_tokens,
        max_length=args.max_length,
        token_budget=args.token_budget,
    )

    def load():
        if args.backend == "openai":  # a gateway: the tokenizer only, the engines run the model
            from ..judge import GramJudge

            return GramJudge.from_openai(
                args.engine_urls, served_model_name=args.served_model_name, tokenizer=args.model, **options
            )
        if args.backend == "vllm":
            from ..judge import GramJudge

            return GramJudge.from_vllm(
                args.model,
                tensor_parallel_size=args.tensor_parallel_size,
                gpu_memory_utilization=args.gpu_memory_utilization,
                dtype=args.dtype,
                **options,
            )
        from ..judge import GramJudge

        return GramJudge.from_pretrained(
            args.model,
            adapter=args.adapter,
            load_in_4bit=args.load_in_4bit,
            dtype=args.dtype,
            device=args.device,
            engine=args.engine,
            **options,
        )

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
