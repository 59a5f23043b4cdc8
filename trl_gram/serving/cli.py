"""``trl-gram serve``: run the reward server (see :mod:`trl_gram.serving.server`).

trl-gram serve --model PATH_OR_ID --host 0.0.0.0 --port 8000 [--api-key-env TRL_GRAM_API_KEY]
trl-gram serve --backend vllm --model wangclnlp/GRAM-RR-LLaMA-3.1-8B-RewardModel --tensor-parallel-size 2
"""

from __future__ import annotations

import argparse
import os

from .server import ServeConfig


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve a judge over HTTP (OpenRLHF --remote_rm_url, verl, RemoteGenerativeRewardFunction)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    judge = p.add_argument_group("judge")
    judge.add_argument("--model", default=None, help="judge model folder or Hub id (default: embedded SmolLM2)")
    judge.add_argument("--adapter", default=None, help="PEFT adapter to put on the model")
    judge.add_argument("--backend", choices=("transformers", "vllm"), default="transformers")
    judge.add_argument("--mode", choices=("reason", "direct"), default="reason")
    judge.add_argument("--template", default=None, help="judge template name (gram-r2, gram-v1, gram-r2-direct)")
    judge.add_argument("--swap", choices=("both", "random", "none"), default="both")
    judge.add_argument("--max-new-tokens", type=int, default=1024)
    judge.add_argument("--max-length", type=int, default=4096)
    judge.add_argument("--token-budget", type=int, default=32768)
    judge.add_argument("--engine", choices=("auto", "fast", "plain"), default="auto")
    judge.add_argument("--dtype", default="auto")
    judge.add_argument("--device", default=None)
    judge.add_argument("--load-in-4bit", action="store_true")
    judge.add_argument("--tensor-parallel-size", type=int, default=1, help="vLLM backend only")
    judge.add_argument("--gpu-memory-utilization", type=float, default=None, help="vLLM backend only")
    server = p.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1", help="use 0.0.0.0 to accept other machines")
    server.add_argument("--port", type=int, default=8000)
    server.add_argument(
        "--api-key-env",
        default=None,
        help="name of an environment variable holding the bearer token clients must send (never on the command line)",
    )
    server.add_argument("--max-request-bytes", type=int, default=ServeConfig.max_request_bytes)
    server.add_argument("--max-pairs-per-request", type=int, default=ServeConfig.max_pairs_per_request)
    server.add_argument("--batch-window-ms", type=float, default=ServeConfig.batch_window_ms)
    server.add_argument("--max-batch-pairs", type=int, default=ServeConfig.max_batch_pairs)
    server.add_argument("--reference", choices=("group", "pivot"), default="group")
    server.add_argument("--output", choices=("prob", "logit", "centered"), default="prob")
    server.add_argument("--failure-reward", type=float, default=None)
    p.set_defaults(_run=run)


def judge_factory(args):
    """A function loading the judge described by the command-line arguments."""
    config = dict(
        mode=args.mode,
        template=args.template,
        swap=args.swap,
        max_new_tokens=args.max_new_tokens,
        max_length=args.max_length,
        token_budget=args.token_budget,
    )

    def load():
        if args.backend == "vllm":
            from ..judge import GramJudge

            return GramJudge.from_vllm(
                args.model,
                tensor_parallel_size=args.tensor_parallel_size,
                gpu_memory_utilization=args.gpu_memory_utilization,
                dtype=args.dtype,
                **config,
            )
        from ..judge import GramJudge

        return GramJudge.from_pretrained(
            args.model,
            adapter=args.adapter,
            load_in_4bit=args.load_in_4bit,
            dtype=args.dtype,
            device=args.device,
            engine=args.engine,
            **config,
        )

    return load


def build_config(args) -> ServeConfig:
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise ValueError(f"`--api-key-env {args.api_key_env}`: that environment variable is empty or unset.")
    return ServeConfig(
        host=args.host,
        port=args.port,
        api_key=api_key,
        max_request_bytes=args.max_request_bytes,
        max_pairs_per_request=args.max_pairs_per_request,
        batch_window_ms=args.batch_window_ms,
        max_batch_pairs=args.max_batch_pairs,
        reference=args.reference,
        output=args.output,
        failure_reward=args.failure_reward,
    )


def run(args) -> int:
    import uvicorn

    from .server import create_app

    config = build_config(args)
    app = create_app(config=config, judge_factory=judge_factory(args))
    uvicorn.run(app, host=config.host, port=config.port, log_level="info")
    return 0
