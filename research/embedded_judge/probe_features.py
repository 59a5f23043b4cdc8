"""Is the preference there to be learned? A linear probe on the embedded model's own direct-mode representations.

For each pair, the zero-shot embedded model reads the direct-mode judge prompt in both orders; the hidden state at
the prompt's last token (where the judge reads its label) is kept at several layers. A logistic regression on the
difference of the two orders' states (a random half of the pairs flipped, so the target is balanced) is fit on
``--train_pairs`` warm-up pairs and scored on the first ``--heldout_pairs`` rows of each held-out slice. If no layer
separates the held-out pairs better than chance, fine-tuning the judge on this much data has nothing to amplify.

A judge reads one order at a time, so a second probe is fit on single-order states (target: the better response is
shown first), as a direct-mode head at that layer would be; on the held-out pairs it reports the accuracy of each
order alone, the swap agreement (both orders pick the same response) and the accuracy of the position-debiased
probability (the mean of the two orders), the figures `trl-gram eval` gives for a judge.

    OMP_NUM_THREADS=2 python research/embedded_judge/probe_features.py --data runs/embedded_judge/data \\
        --out runs/embedded_judge/probe
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch
from tqdm.auto import tqdm

from trl_gram import GramJudge
from trl_gram.templates import question_to_text, response_to_text

SETS = ("hh_rlhf", "pandalm", "judgebench")


def rows(path: Path, n: int) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()[:n]]


@torch.inference_mode()
def order_states(judge: GramJudge, pairs: list[dict], layers: list[int], desc: str) -> torch.Tensor:
    """[pairs, 2 orders (chosen first, chosen second), layers, hidden] last-token states."""
    model = judge.model
    out = []
    for r in tqdm(pairs, desc=desc):
        states = []
        q, chosen, rejected = (
            question_to_text(r["prompt"]),
            response_to_text(r["chosen"]),
            response_to_text(r["rejected"]),
        )
        for first, second in ((chosen, rejected), (rejected, chosen)):
            ids, _ = judge.encode_prompt(q, first, second, "direct")
            with torch.autocast("cpu", dtype=torch.bfloat16):
                hs = model(torch.tensor([ids]), output_hidden_states=True).hidden_states
            states.append(torch.stack([hs[i][0, -1].float() for i in layers]))
        out.append(torch.stack(states))
    return torch.stack(out)


def flipped(states: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (order difference) and targets (1 when the chosen response was shown first), half of them flipped."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(states.shape[0], generator=g) < 0.5).float()
    diff = states[:, 0] - states[:, 1]
    sign = (2 * y - 1).view(-1, *([1] * (diff.dim() - 1)))
    return diff * sign, y


def fit_probe(x: torch.Tensor, y: torch.Tensor, l2: float, steps: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = x.mean(0), x.std(0) + 1e-6
    xs = (x - mean) / std
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xs @ w + b, y) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return (w.detach() / std), (b.detach() - (mean / std) @ w.detach())


def accuracy(w, b, x, y) -> float:
    return float((((x @ w + b) > 0).float() == y).float().mean())


def single_order(states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each order's states as its own example: target 1 when the chosen response is shown first."""
    n = states.shape[0]
    return torch.cat([states[:, 0], states[:, 1]]), torch.cat([torch.ones(n), torch.zeros(n)])


def judge_figures(w, b, states: torch.Tensor) -> dict:
    """Per-order accuracy, swap agreement and debiased accuracy (ties count half) of a single-order head."""
    p_first = torch.sigmoid(states[:, 0] @ w + b)  # chosen shown first: P(first better) should be high
    p_second = torch.sigmoid(states[:, 1] @ w + b)  # chosen shown second: should be low
    right_first, right_second = p_first > 0.5, p_second < 0.5
    debiased = (p_first + 1 - p_second) / 2
    return {
        "order_1": float(right_first.float().mean()),
        "order_2": float(right_second.float().mean()),
        "swap_agreement": float((right_first == right_second).float().mean()),
        "debiased": float(((debiased > 0.5).float() + 0.5 * (debiased == 0.5).float()).mean()),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="runs/embedded_judge/data")
    p.add_argument("--out", default="runs/embedded_judge/probe")
    p.add_argument("--train_pairs", type=int, default=600)
    p.add_argument("--heldout_pairs", type=int, default=60)
    p.add_argument("--max_length", type=int, default=640)
    p.add_argument("--layers", type=int, nargs="+", default=[6, 12, 18, 24, 30])
    p.add_argument("--l2", type=float, nargs="+", default=[1e-3, 1e-2, 1e-1])
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    judge = GramJudge.from_pretrained(None, max_length=a.max_length, dtype=torch.float32)
    data = Path(a.data)
    cached = out / "states.pt"
    if cached.is_file():
        states = torch.load(cached)
    else:
        train = rows(data / "warmup.jsonl", a.train_pairs)
        states = {"train": order_states(judge, train, a.layers, "warm-up pairs")}
        for s in SETS:
            states[s] = order_states(judge, rows(data / f"heldout_{s}.jsonl", a.heldout_pairs), a.layers, s)
        torch.save(states, cached)
    random.seed(0)
    report = {}
    x_tr, y_tr = flipped(states["train"], seed=0)
    n_val = len(y_tr) // 5
    for li, layer in enumerate(a.layers):
        # l2 chosen on the last fifth of the training pairs, then refit on all of them
        best = max(
            a.l2,
            key=lambda l2: accuracy(*fit_probe(x_tr[n_val:, li], y_tr[n_val:], l2), x_tr[:n_val, li], y_tr[:n_val]),
        )
        w, b = fit_probe(x_tr[:, li], y_tr, best)
        row = {"l2": best, "train": accuracy(w, b, x_tr[:, li], y_tr)}
        correct = total = 0
        for k, s in enumerate(SETS):
            x, y = flipped(states[s], seed=k + 1)
            acc = accuracy(w, b, x[:, li], y)
            row[s] = acc
            correct += acc * len(y)
            total += len(y)
        row["pooled"] = correct / total
        # the single-order head, l2 chosen on the same validation fifth of the pairs
        tr = states["train"][:, :, li]
        best1 = max(
            a.l2,
            key=lambda l2: judge_figures(*fit_probe(*single_order(tr[n_val:]), l2), tr[:n_val])["debiased"],
        )
        w1, b1 = fit_probe(*single_order(tr), best1)
        single = {"l2": best1, "train": judge_figures(w1, b1, tr)}
        pooled = {}
        for s in SETS:
            single[s] = judge_figures(w1, b1, states[s][:, :, li])
        for k in single["train"]:
            pooled[k] = sum(single[s][k] * len(states[s]) for s in SETS) / sum(len(states[s]) for s in SETS)
        single["pooled"] = pooled
        row["single_order"] = single
        report[f"layer_{layer}"] = row
        print(
            f"layer {layer}: "
            + ", ".join(
                f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items() if k != "single_order"
            )
        )
        print(
            f"  single-order head (l2 {best1}): "
            + "; ".join(
                f"{s} " + " ".join(f"{k} {v:.3f}" for k, v in single[s].items()) for s in ("train", *SETS, "pooled")
            )
        )
    (out / "probe.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
