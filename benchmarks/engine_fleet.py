"""The judge on an engine fleet, one run: the same GRPO-like workload (``grpo_workload.py``: P prompts x G
completions compared within each group, direct and reason mode) judged by

1. in-process vLLM (``GramJudge.from_vllm``: ``vllm.LLM`` in this process),
2. the ``openai`` backend on one ``vllm serve`` engine,
3. the ``openai`` backend on two engines,

all float32, greedy, on the embedded SmolLM2-135M-Instruct, each engine with one OpenMP thread (an engine per core).
Reports pairs per second of each, the overhead ratio (one engine over HTTP / in-process vLLM; goal >= 0.9), the
scaling (two engines / one; goal >= 1.6), and the largest reward difference between the three (greedy: equal within
float rounding). Engines are started by this script (then stopped), one configuration at a time: in-process vLLM is
released before the engines start.

    OMP_NUM_THREADS=1 /work/main/.venv-vllm/bin/python benchmarks/engine_fleet.py --output benchmarks/results/engine_fleet.json

The machine's load average is recorded at each phase: on a shared machine, read the ratios with it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from grpo_workload import build_workload  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def engines(model: str, count: int, log_dir: Path):
    """`count` `vllm serve` engines (one thread each) on free ports; their base URLs."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    procs, urls = [], []
    try:
        for _ in range(count):
            port = _free_port()
            cmd = [
                sys.executable,
                "-m",
                "vllm.entrypoints.openai.api_server",
                "--model",
                model,
                "--dtype",
                "float32",
                "--max-model-len",
                "4096",
                "--kv-cache-memory-bytes",
                str(2**30),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ]
            log = open(log_dir / f"engine{port}.log", "w")
            procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
            urls.append(f"http://127.0.0.1:{port}")
        for url, proc in zip(urls, procs):
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"engine {url} exited while starting (see {log_dir})")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + "/v1/models", timeout=5).status_code == 200:
                        break
                time.sleep(2)
        yield urls
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(60)


def measure(judge, workload, mode: str, groups: int, max_new_tokens: int, repeats: int) -> dict:
    """Judge the first `groups` groups (all pairs, both orders) `repeats` times after one warm-up call; best time."""
    from trl_gram.judge import GramJudge

    j = GramJudge(
        backend=judge.backend,
        tokenizer=judge.tokenizer,
        mode=mode,
        max_new_tokens=max_new_tokens,
        cache_size=0,
    )
    q, a, b = workload.group_pairs(groups)
    j.judge(q[:2], a[:2], b[:2])  # warm-up (connections, first compile)
    best, probs = None, None
    for _ in range(repeats):
        start = time.perf_counter()
        out = j.judge(q, a, b)
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
        probs = [jd.prob for jd in out]
    return {
        "pairs": len(q),
        "seconds": best,
        "pairs_per_s": len(q) / best,
        "probs": probs,
        "load_avg": os.getloadavg()[0],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--completions", type=int, default=8)
    parser.add_argument("--reason-groups", type=int, default=1, help="groups judged in reason mode (all pairs)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="rationale cap in reason mode")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--output", default=None, help="write the results here (JSON)")
    args = parser.parse_args(argv)

    from transformers import AutoTokenizer

    from trl_gram.default_model import default_model_path
    from trl_gram.judge import GramJudge

    model = default_model_path()
    tokenizer = AutoTokenizer.from_pretrained(model)
    workload = build_workload(tokenizer, args.prompts, args.completions, 100, 300, args.data_dir)
    plan = [("direct", args.prompts, 1), ("reason", args.reason_groups, args.max_new_tokens)]
    results = {
        "workload": {
            "prompts": args.prompts,
            "completions": args.completions,
            "source": workload.source,
            "reason_groups": args.reason_groups,
            "max_new_tokens": args.max_new_tokens,
        },
        "cpus": os.cpu_count(),
        "runs": {},
    }

    def run(name, judge):
        for mode, groups, tokens in plan:
            r = measure(judge, workload, mode, groups, tokens, args.repeats)
            results["runs"][f"{name}/{mode}"] = r
            print(
                f"{name:>12} {mode:>6}: {r['pairs']} pairs in {r['seconds']:.1f} s = {r['pairs_per_s']:.2f} "
                f"pairs/s (load {r['load_avg']:.1f})",
                flush=True,
            )

    inproc = GramJudge.from_vllm(
        model, dtype="float32", max_model_len=4096, cache_size=0, llm_kwargs=dict(enforce_eager=True)
    )
    run("in-process", inproc)
    inproc.release()
    del inproc
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / "engine_fleet_logs"
    log_dir.mkdir(exist_ok=True)
    with engines(model, 2, log_dir) as urls:
        one = GramJudge.from_openai(urls[:1], tokenizer=model, cache_size=0)
        run("openai x1", one)
        one.release()
        two = GramJudge.from_openai(urls, tokenizer=model, cache_size=0)
        run("openai x2", two)
        two.release()

    summary = {}
    for mode, _, _ in plan:
        runs = {k.split("/")[0]: v for k, v in results["runs"].items() if k.endswith("/" + mode)}
        ref = runs["in-process"]["probs"]
        summary[mode] = {
            "overhead_ratio": runs["openai x1"]["pairs_per_s"] / runs["in-process"]["pairs_per_s"],
            "scaling": runs["openai x2"]["pairs_per_s"] / runs["openai x1"]["pairs_per_s"],
            "max_prob_diff": max(
                abs(x - y)
                for name in ("openai x1", "openai x2")
                for x, y in zip(runs[name]["probs"], ref)
                if x == x and y == y
            ),
        }
        print(
            f"{mode}: overhead ratio (1 engine / in-process) {summary[mode]['overhead_ratio']:.2f}, scaling "
            f"(2 / 1) {summary[mode]['scaling']:.2f}x, max reward difference {summary[mode]['max_prob_diff']:.2e}"
        )
    results["summary"] = summary
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
