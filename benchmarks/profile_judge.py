"""Where the judge's time goes on this machine: the profile behind the speed notes in the README.

    python benchmarks/profile_judge.py --threads 1 [--completions 8 --max-new-tokens 128]

Three measurements on the default judge (embedded SmolLM2-135M-Instruct) and one GRPO-like group (``--completions``
completions of one hh-rlhf question, every pair, both orders):

1. **Plain decoding step cost against batch rows**: one forward of ``rows`` new tokens over a ``--context``-token
   ``DynamicCache``, for 1 to 64 rows, next to the same forward without a cache (the weights' share). Each row reads
   its own keys/values at every step, so the cache's share grows with rows × context; the weights' share per row
   falls towards the compute bound (matmul FLOP/s ÷ 2 × parameters) as rows grow.
2. **Fast engine, direct and reason mode**: wall time split into prefill and decoding (engine counters), tokens
   actually computed against the prompt tokens a plain engine would compute, and decoding rows per step.
3. **Top operators** (cProfile, self time) of the reason-mode call.

Results go to ``--out`` (JSON) and the terminal.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grpo_workload import build_workload  # noqa: E402
from judge_throughput import matmul_flops, warmed_judge  # noqa: E402

from trl_gram.judge import GramJudge  # noqa: E402


@torch.no_grad()
def decode_step_cost(model, rows: int, context: int, repeats: int = 3) -> float:
    """Seconds of one plain decoding step (``DynamicCache``) of ``rows`` rows over a ``context``-token cache (best of
    ``repeats``). The cache is one prefilled row repeated, so the sweep does not pay ``rows × context`` prefill."""
    device = next(model.parameters()).device
    ids = torch.randint(100, 1000, (1, context), device=device)
    cache = model(input_ids=ids, use_cache=True).cache
    cache.batch_repeat_interleave(rows)
    step = torch.randint(100, 1000, (rows, 1), device=device)
    pos = torch.full((rows, 1), context, device=device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        model(input_ids=step, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1)
        best = min(best, time.perf_counter() - t)
        cache.crop(-1)  # drop the step's token again
    return best


@torch.no_grad()
def no_context_cost(model, rows: int, repeats: int = 3) -> float:
    """Seconds of one forward of ``rows`` single tokens with no cache: the weights' share of a decoding step."""
    ids = torch.randint(100, 1000, (rows, 1), device=next(model.parameters()).device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        model(input_ids=ids, logits_to_keep=1)
        best = min(best, time.perf_counter() - t)
    return best


def engine_run(model, tok, mode, q, a, b, max_new_tokens, budget, profile=False):
    judge = warmed_judge(model, tok, mode, budget, max_new_tokens, backend="prefix")
    stats = judge.backend.engine.stats
    prof = cProfile.Profile() if profile else None
    t = time.perf_counter()
    if prof:
        prof.enable()
    judge.judge(q, a, b, swap="both")
    if prof:
        prof.disable()
    wall = time.perf_counter() - t
    top = None
    if prof:
        buf = io.StringIO()
        st = pstats.Stats(prof, stream=buf)
        total = st.total_tt
        rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:8]
        top = [{"function": f"{Path(k[0]).name}:{k[2]}", "self_seconds": v[2], "share": v[2] / total} for k, v in rows]
    return {"mode": mode, "pairs": len(q), "seconds": wall, **dict(stats), "top_self_time": top}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--completions", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--context", type=int, default=800, help="cache length of the decoding-step sweep")
    p.add_argument("--token-budget", type=int, default=65536)
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--out", default="benchmarks/results/profile_judge.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    judge = GramJudge.from_pretrained(None, show_progress=False)
    model, tok = judge.model, judge.tokenizer
    params = sum(x.numel() for x in model.parameters())
    flops = matmul_flops("cpu", torch.float32, 2048)
    bound = flops / (2 * params)
    print(f"{params / 1e6:.1f}M parameters, matmul {flops / 1e9:.1f} GFLOP/s, compute bound {bound:.0f} tok/s")

    sweep = []
    print(f"decoding step over a {args.context}-token cache:")
    for rows in (1, 4, 16, 32, 64):
        s = decode_step_cost(model, rows, args.context)
        w = no_context_cost(model, rows)
        sweep.append(
            {
                "rows": rows,
                "step_seconds": s,
                "no_cache_seconds": w,
                "tokens_per_s": rows / s,
                "of_bound": rows / s / bound,
            }
        )
        print(
            f"  {rows:3d} rows: {1000 * s:7.1f} ms/step ({1000 * w:6.1f} ms without the cache)  {rows / s:7.1f} tok/s  "
            f"({100 * rows / s / bound:.0f} % of bound)"
        )

    work = build_workload(tok, 1, args.completions, data_dir=args.data_dir)
    q, a, b = work.group_pairs(1)
    runs = []
    for mode in ("direct", "reason"):
        r = engine_run(model, tok, mode, q, a, b, args.max_new_tokens, args.token_budget, profile=mode == "reason")
        runs.append(r)
        decode = r["decode_seconds"]
        print(
            f"{mode}: {r['pairs']} pairs in {r['seconds']:.1f}s; prompt tokens {r['prompt_tokens']}, computed "
            f"{r['computed_tokens']} ({r['computed_tokens'] / r['prompt_tokens']:.0%}) in {r['prefill_seconds']:.1f}s "
            f"({r['padded_tokens'] / max(r['prefill_seconds'], 1e-9):.0f} tok/s); decoding {r['decode_steps']} steps, "
            f"{r['decode_rows']} row-tokens in {decode:.1f}s"
            + (
                f" ({r['decode_rows'] / decode:.0f} tok/s, {r['decode_rows'] / r['decode_steps']:.1f} rows/step)"
                if r["decode_steps"]
                else ""
            )
        )
    for t in runs[-1]["top_self_time"]:
        print(f"  {t['function']:<50} {t['self_seconds']:7.1f}s {100 * t['share']:5.1f} %")
    report = {
        "threads": args.threads,
        "parameters": params,
        "matmul_flops": flops,
        "compute_bound_tokens_per_s": bound,
        "decode_step_sweep": sweep,
        "engine_runs": runs,
        "workload": {"source": work.source, "completions": args.completions, "max_new_tokens": args.max_new_tokens},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
