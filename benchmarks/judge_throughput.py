"""Judge throughput on a GRPO-like workload: the authors' demo style, a straightforward batched baseline, and
trl-gram's engine, measured in one run on the same model and the same pairs.

    python benchmarks/judge_throughput.py --quick --threads 1      # a few minutes on CPU
    .venv-vllm/bin/python benchmarks/judge_throughput.py --threads 1 --with-vllm   # adds the vLLM rows
    python benchmarks/judge_throughput.py --threads 1 --whole-batch-reason   # the README table (8 prompts × 8)
    bash benchmarks/gpu_bench.sh                                   # one GPU, bf16 (see that script)

Methods (all greedy, same ``--max-new-tokens`` cap):

* ``A (demo)``: the authors' demo style: one unbatched ``generate`` per pair, one order, fixed ``max_new_tokens``
  (no stop at the answer slot), label parsed from the text.
* ``B reason``: batched ``generate`` over both orders (left-padded, token-budget batches), fixed ``max_new_tokens``,
  labels parsed from the text. ``B direct``: one padded forward per batch over both orders, label probability at
  the last position (``logits_to_keep=1``).
* ``B+CB reason`` (``--with-cb``): transformers continuous batching (``generate_batch`` with a sized
  ``ContinuousBatchingConfig``) over both orders.
* ``vllm direct`` / ``vllm reason`` (``--with-vllm``, in the environment of ``setup_vllm.sh``): the same checkpoint
  and dtype on ``vllm.LLM`` (``GramJudge.from_vllm``, prefix caching on, its cache reset before each run), the same
  pairs as ``ours direct`` / ``ours reason``. vLLM runs in its own engine process: its ``cpu`` column is the client's
  only. On CPU vLLM binds its compute threads itself (by default one core per engine, one core reserved for the
  client: ``VLLM_CPU_OMP_THREADS_BIND``, ``VLLM_CPU_NUM_OF_RESERVED_CPU``).
* ``ours direct`` / ``ours reason``: ``GramJudge(backend="prefix")``, ``swap="both"`` (both orders, debiased
  probability read at the answer slot); ``ours direct*`` / ``ours reason*`` (``--whole-batch-reason``) the whole
  GRPO batch in one call, as the reward function judges a training step; ``ours reason 1-order`` the same engine
  with ``swap="none"``, one order per pair like A.

Rates are pairs per second of wall-clock time. ``prompt tok/s`` counts every prompt token of every run (the logical
work, as a plain engine would process it); the prefill bound is the matmul FLOP/s measured in the same run divided by
2 × parameters, so an engine that skips shared work can exceed 100 %. Baselines that take long run on a prefix of the
pairs (``pairs`` column); their rates are compared with ours on the same kind of pairs.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grpo_workload import build_workload  # noqa: E402

from trl_gram.judge import GramJudge  # noqa: E402
from trl_gram.parsing import parse_with_template  # noqa: E402


# ------------------------------------------------------------------------------------------------------------------
# Measurement helpers
# ------------------------------------------------------------------------------------------------------------------
class PeakMemory:
    """Peak resident memory (CPU, sampled) or peak allocated memory (CUDA) during a block, in MiB."""

    def __init__(self, device: str):
        self.device = device
        self.peak = 0.0

    @staticmethod
    def _rss() -> float:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def __enter__(self):
        gc.collect()
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return self
        try:  # give freed heap back to the OS so the baseline is not inflated by earlier methods
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        self.base = self._rss()
        self.peak = self.base
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(0.02):
                self.peak = max(self.peak, self._rss())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._rss())


def matmul_flops(device: str, dtype: torch.dtype, size: int, repeats: int = 10) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(3):
        _sync(device)
        t = time.perf_counter()
        for _ in range(repeats):
            a @ b
        _sync(device)
        best = min(best, (time.perf_counter() - t) / repeats)
    return 2 * size**3 / best


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def run_method(name, fn, device, pairs, prompt_tokens):
    """Time ``fn() -> generated_tokens`` (wall and process CPU time) and its peak memory."""
    _sync(device)
    with PeakMemory(device) as mem:
        wall, cpu = time.perf_counter(), time.process_time()
        generated = fn()
        _sync(device)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    row = {
        "method": name,
        "pairs": pairs,
        "seconds": wall,
        "cpu_seconds": cpu,
        "pairs_per_s": pairs / wall,
        "prompt_tokens": prompt_tokens,
        "prompt_tokens_per_s": prompt_tokens / wall,
        "generated_tokens": generated,
        "generated_tokens_per_s": generated / wall if generated else None,
        "peak_mem_mib": mem.peak,
        "peak_extra_mem_mib": mem.peak - getattr(mem, "base", 0.0),
    }
    print(
        f"  {name:<14} {pairs:4d} pairs {wall:8.1f}s (cpu {cpu:7.1f}s)  {row['pairs_per_s']:.3f} pairs/s  "
        f"peak {mem.peak:.0f} MiB (+{row['peak_extra_mem_mib']:.0f})",
        flush=True,
    )
    return row


# ------------------------------------------------------------------------------------------------------------------
# Methods
# ------------------------------------------------------------------------------------------------------------------
def _batches(lengths, budget, extra):
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    out, cur, width = [], [], 0
    for i in order:
        w = max(width, lengths[i] + extra)
        if cur and w * (len(cur) + 1) > budget:
            out.append(cur)
            cur, w = [], lengths[i] + extra
        cur.append(i)
        width = w
    return out + ([cur] if cur else [])


def _left_pad(seqs, pad_id, device):
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, width - len(s) :] = torch.tensor(s)
        mask[r, width - len(s) :] = 1
    return ids.to(device), mask.to(device)


def demo_style(judge, q, a, b, max_new_tokens):
    """Baseline A: one ``generate`` per pair (order AB), fixed max_new_tokens, parse the text."""
    model, tok = judge.model, judge.tokenizer
    template = judge.template_for("reason")
    generated = 0
    for x, y, z in zip(q, a, b):
        text = judge.render_prompt(x, y, z, mode="reason")
        inputs = tok([text], return_tensors="pt", add_special_tokens=False).to(model.device)
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=judge.pad_id)
        new = out[0, inputs.input_ids.shape[1] :]
        generated += len(new)
        parse_with_template(tok.decode(new, skip_special_tokens=True), template)
    return generated


def batched_generate(judge, prompts, max_new_tokens, budget):
    """Baseline B (reason): batched ``generate`` over the given prompts, fixed max_new_tokens, parse the texts."""
    model, tok = judge.model, judge.tokenizer
    template = judge.template_for("reason")
    generated = 0
    for batch in _batches([len(p) for p in prompts], budget, max_new_tokens):
        ids, mask = _left_pad([prompts[i] for i in batch], judge.pad_id, model.device)
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=judge.pad_id,
        )
        for row in out[:, ids.shape[1] :].tolist():
            row = [t for t in row if t != judge.pad_id]
            generated += len(row)
            parse_with_template(tok.decode(row, skip_special_tokens=True), template)
    return generated


def continuous_batching(judge, prompts, max_new_tokens, budget):
    """Baseline B+CB (reason): transformers ``generate_batch`` with a sized continuous-batching config."""
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    model, tok = judge.model, judge.tokenizer
    template = judge.template_for("reason")
    page = 64
    longest = max(map(len, prompts)) + max_new_tokens
    cb = ContinuousBatchingConfig(
        page_size=page,
        num_blocks=max(budget // page, 2 * (longest // page + 1)),
        max_batch_tokens=min(budget, 4096),
        allow_block_sharing=True,
    )
    gen = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=judge.pad_id
    )
    out = model.generate_batch(inputs=prompts, generation_config=gen, continuous_batching_config=cb)
    generated = 0
    for result in out.values():
        generated += len(result.generated_tokens)
        parse_with_template(tok.decode(result.generated_tokens, skip_special_tokens=True), template)
    return generated


@torch.no_grad()
def padded_forward(judge, prompts, budget):
    """Baseline B (direct): padded forward over the given prompts, label probability at the last position."""
    model = judge.model
    first, second = judge._label_token_ids(judge.template_for("direct"))
    label_ids = torch.tensor(first + second, device=model.device)
    for batch in _batches([len(p) for p in prompts], budget, 0):
        ids, mask = _left_pad([prompts[i] for i in batch], judge.pad_id, model.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1).logits
        torch.softmax(logits[:, -1].float().index_select(-1, label_ids), -1)
    return 0


def warmed_judge(model, tok, mode, token_budget, max_new_tokens, backend="auto"):
    """``ours``: a judge on the loaded model without the run cache, its fast path self-checked on a warm-up pair and
    its engine counters reset afterwards."""
    j = GramJudge(
        model,
        tok,
        mode=mode,
        backend=backend,
        token_budget=token_budget,
        cache_size=0,
        max_new_tokens=max_new_tokens,
        show_progress=False,
    )
    j.judge(["warm up"], ["a"], ["b"])  # one-time self-check of the fast path
    engine = getattr(j.backend, "engine", None)
    if engine is None or not engine._supported:
        print(f"  (the fast engine is not supported here: 'ours {mode}' runs on the plain engine)")
    else:
        engine.stats.update({k: 0 * v for k, v in engine.stats.items()})
    return j


def engine_stats(judge) -> dict:
    engine = getattr(judge.backend, "engine", None)
    return dict(engine.stats) if engine is not None else {}


def vllm_judge(args):
    """The same checkpoint on vLLM (``--with-vllm``): float32 like ours, prefix caching on, eager (no compile)."""
    return GramJudge.from_vllm(
        args.model,
        dtype=args.dtype,
        max_model_len=args.vllm_max_model_len,
        llm_kwargs=dict(enforce_eager=True),
        token_budget=args.token_budget,
        max_new_tokens=args.max_new_tokens,
        cache_size=0,
        show_progress=False,
    )


def on_vllm(judge, q, a, b, mode):
    """A vLLM run from a cold prefix cache (so a repeated workload is not served from the previous run's cache)."""
    judge.backend.llm.reset_prefix_cache()
    return ours(judge, q, a, b, mode)


def ours(judge, q, a, b, mode, swap="both"):
    out = judge.judge(q, a, b, mode=mode, swap=swap)
    if mode == "reason":
        return sum(len(judge.tokenizer.encode(r.text, add_special_tokens=False)) for jd in out for r in jd.runs)
    return 0


# ------------------------------------------------------------------------------------------------------------------
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 prompts × 4 completions, short rationales")
    parser.add_argument("--model", default=None, help="judge model folder (default: the embedded SmolLM2)")
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--completions", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--token-budget", type=int, default=32768)
    parser.add_argument("--reason-groups", type=int, default=1, help="groups judged in reason mode (all pairs)")
    parser.add_argument("--baseline-groups", type=int, default=1, help="groups for baseline B direct")
    parser.add_argument("--demo-pairs", type=int, default=6, help="pairs for baseline A")
    parser.add_argument("--with-cb", action="store_true", help="also measure transformers continuous batching")
    parser.add_argument(
        "--whole-batch-reason",
        action="store_true",
        help="also judge every group in reason mode in one call ('ours reason*', the reward function's case)",
    )
    parser.add_argument(
        "--with-vllm",
        action="store_true",
        help="also measure the judge on vLLM ('vllm direct', 'vllm reason': same pairs as 'ours direct' / 'ours reason')",
    )
    parser.add_argument("--vllm-max-model-len", type=int, default=4096)
    parser.add_argument("--out", default="benchmarks/results/judge_throughput")
    args = parser.parse_args(argv)
    if args.quick:
        args.prompts, args.completions, args.max_new_tokens = 2, 4, 48
        args.reason_groups, args.baseline_groups, args.demo_pairs = 1, 1, 2
        args.out += "_quick"
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    dtype = getattr(torch, args.dtype)
    judge = GramJudge.from_pretrained(
        args.model, device=args.device, dtype=dtype, token_budget=args.token_budget, max_new_tokens=args.max_new_tokens
    )
    model, tok = judge.model, judge.tokenizer
    params = sum(p.numel() for p in model.parameters())
    flops = matmul_flops(args.device, dtype, 8192 if args.device == "cuda" else 2048)
    bound = flops / (2 * params)
    print(f"model {params / 1e6:.1f}M params, matmul {flops / 1e9:.1f} GFLOP/s, prefill bound {bound:.0f} tok/s")
    work = build_workload(tok, args.prompts, args.completions, data_dir=args.data_dir)
    print(f"workload: {args.prompts} prompts × {args.completions} completions from {work.source}")

    def prompts_for(q, a, b, mode):
        return [
            judge.encode_prompt(x, *(yz if o == 0 else yz[::-1]), mode)[0] for x, *yz in zip(q, a, b) for o in (0, 1)
        ]

    def fast_judge(mode):
        return warmed_judge(model, tok, mode, args.token_budget, args.max_new_tokens)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []

    errors = {}

    def measure(name, fn, pairs, tokens):
        try:
            rows.append(run_method(name, fn, args.device, pairs, tokens))
        except Exception as e:  # noqa: BLE001  (one failing method must not lose the others' figures)
            print(f"  {name} failed: {e!r}", flush=True)
            errors[name] = repr(e)
        partial = {"args": vars(args), "partial": True, "results": rows}
        out.with_suffix(".partial.json").write_text(json.dumps(partial, indent=2))

    vj = None
    if args.with_vllm:
        try:
            print("loading the judge into vLLM", flush=True)
            vj = vllm_judge(args)
            vj.judge(["warm up"], ["a"], ["b"], mode="direct")
        except Exception as e:  # noqa: BLE001
            print(f"  vLLM not available: {e!r}", flush=True)
            errors["vllm"] = repr(e)
    load_before = os.getloadavg()
    # Direct mode: ours on the whole workload and on the baseline's groups; baseline B on those groups.
    qd, ad, bd = work.group_pairs()
    qb, ab, bb = work.group_pairs(args.baseline_groups)
    direct_prompts = prompts_for(qb, ab, bb, "direct")
    direct_tokens = sum(map(len, direct_prompts))
    ours_direct = fast_judge("direct")
    print("direct mode")
    measure("B direct", lambda: padded_forward(judge, direct_prompts, args.token_budget), len(qb), direct_tokens)
    measure("ours direct", lambda: ours(ours_direct, qb, ab, bb, "direct"), len(qb), direct_tokens)
    if len(qd) > len(qb):
        all_tokens = sum(map(len, prompts_for(qd, ad, bd, "direct")))
        measure("ours direct*", lambda: ours(ours_direct, qd, ad, bd, "direct"), len(qd), all_tokens)
    if vj is not None:
        measure("vllm direct", lambda: on_vllm(vj, qb, ab, bb, "direct"), len(qb), direct_tokens)
    direct_stats = engine_stats(ours_direct)
    # Reason mode: all pairs of the first groups; baseline A on the first pairs.
    qr, ar, br = work.group_pairs(args.reason_groups)
    reason_prompts = prompts_for(qr, ar, br, "reason")
    reason_tokens = sum(map(len, reason_prompts))
    ours_reason = fast_judge("reason")
    print("reason mode")
    n = min(args.demo_pairs, len(qr))
    demo_tokens = sum(len(p) for p in reason_prompts[: 2 * n : 2])
    measure("A (demo)", lambda: demo_style(judge, qr[:n], ar[:n], br[:n], args.max_new_tokens), n, demo_tokens)
    measure(
        "B reason",
        lambda: batched_generate(judge, reason_prompts, args.max_new_tokens, args.token_budget),
        len(qr),
        reason_tokens,
    )
    measure("ours reason", lambda: ours(ours_reason, qr, ar, br, "reason"), len(qr), reason_tokens)
    if vj is not None:
        measure("vllm reason", lambda: on_vllm(vj, qr, ar, br, "reason"), len(qr), reason_tokens)
    reason_stats = engine_stats(ours_reason)
    # Like for like with A (one order per pair, no position debiasing): the same engine with swap="none".
    measure(
        "ours reason 1-order",
        lambda: ours(ours_reason, qr, ar, br, "reason", swap="none"),
        len(qr),
        sum(map(len, reason_prompts[::2])),
    )
    if args.whole_batch_reason and len(qd) > len(qr):
        # The whole GRPO batch in one call, as GenerativeRewardFunction judges a training step: decoding batches grow
        # with it, so the per-step weight reads of small-batch decoding are shared by more rows.
        measure(
            "ours reason*",
            lambda: ours(ours_reason, qd, ad, bd, "reason"),
            len(qd),
            sum(map(len, prompts_for(qd, ad, bd, "reason"))),
        )
    if args.with_cb:  # last: the slowest to warm up, so a time limit spares the other figures
        measure(
            "B+CB reason",
            lambda: continuous_batching(judge, reason_prompts, args.max_new_tokens, args.token_budget),
            len(qr),
            reason_tokens,
        )
    load_after = os.getloadavg()
    # The bound is measured again at the end (the machine may be shared): the better of the two is kept.
    flops = max(flops, matmul_flops(args.device, dtype, 8192 if args.device == "cuda" else 2048))
    bound = flops / (2 * params)

    by = {r["method"]: r for r in rows}
    for r in rows:
        r["fraction_of_prefill_bound"] = r["prompt_tokens_per_s"] / bound
    ratios = {}
    for ours_name, base in (
        ("ours reason", "A (demo)"),
        ("ours reason 1-order", "A (demo)"),
        ("ours reason*", "A (demo)"),
        ("ours reason", "B reason"),
        ("ours reason", "B+CB reason"),
        ("ours direct", "B direct"),
        ("ours direct", "vllm direct"),
        ("ours reason", "vllm reason"),
    ):
        if ours_name in by and base in by:
            x, y = by[ours_name], by[base]
            ratios[f"{ours_name} / {base}"] = x["pairs_per_s"] / y["pairs_per_s"]
            if args.device == "cpu" and not base.startswith("vllm"):  # vLLM computes in its own engine process
                ratios[f"{ours_name} / {base}, cpu time"] = (y["cpu_seconds"] / y["pairs"]) / (
                    x["cpu_seconds"] / x["pairs"]
                )
    report = {
        "args": vars(args),
        "machine": {
            "device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu",
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "load_average_before": load_before,
            "load_average_after": load_after,
        },
        "model": {"path": args.model or "embedded SmolLM2-135M-Instruct", "parameters": params, "dtype": args.dtype},
        "matmul_flops": flops,
        "prefill_bound_tokens_per_s": bound,
        "workload": {"source": work.source, "prompts": args.prompts, "completions": args.completions},
        "fast_engine_stats": {"direct": direct_stats, "reason": reason_stats},
        "results": rows,
        "errors": errors,
        "ratios": ratios,
    }
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    out.with_suffix(".partial.json").unlink(missing_ok=True)
    table = markdown(report)
    out.with_suffix(".md").write_text(table)
    print(table)
    return report


def markdown(report) -> str:
    m = report["machine"]
    lines = [
        f"Judge: {report['model']['path']} ({report['model']['parameters'] / 1e6:.0f}M parameters, "
        f"{report['model']['dtype']}), device {m['device']}, {m['torch_threads']} torch threads, torch {m['torch']}; "
        f"matmul {report['matmul_flops'] / 1e9:.0f} GFLOP/s → prefill bound "
        f"{report['prefill_bound_tokens_per_s']:.0f} tok/s. Workload: {report['workload']['prompts']} prompts × "
        f"{report['workload']['completions']} completions ({report['workload']['source']}), max new tokens "
        f"{report['args']['max_new_tokens']}. Load average before/after: "
        f"{m['load_average_before'][0]:.1f}/{m['load_average_after'][0]:.1f}.",
        "",
        "| method | pairs | s | pairs/s | prompt tok/s | of prefill bound | gen tok/s | peak MiB (+ over model) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        gen = f"{r['generated_tokens_per_s']:.1f}" if r["generated_tokens_per_s"] else "–"
        lines.append(
            f"| {r['method']} | {r['pairs']} | {r['seconds']:.1f} | {r['pairs_per_s']:.3f} | "
            f"{r['prompt_tokens_per_s']:.0f} | {100 * r['fraction_of_prefill_bound']:.0f} % | {gen} | "
            f"{r['peak_mem_mib']:.0f} (+{r['peak_extra_mem_mib']:.0f}) |"
        )
    lines += ["", "| ratio | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f}× |" for k, v in report["ratios"].items()]
    lines += [f"\nNot measured: {name}: {error}" for name, error in report.get("errors", {}).items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
