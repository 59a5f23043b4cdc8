"""Load benchmark of the reward server: per-sample clients (current OpenRLHF, verl's reward loop) against one batched
client (OpenRLHF 0.9), on the same samples, in one run.

``clients`` concurrent per-sample clients each own some prompts and send every response of a prompt as its own
``/get_reward`` request, the ``n`` of a prompt at once (the server groups them, ``--group_size n``); then one batched
client sends all samples in one request per round. Both see the same samples for ``rounds`` rounds; the judge's
cache is off so the second pass does the same work. Prints one JSON object: whether the rewards are equal (largest
difference), samples per second and p50/p99 request latency of both, and their ratios.

    python benchmarks/serve_load.py --mode direct                 # the embedded default judge
    python benchmarks/serve_load.py --model PATH --mode reason --rounds 1 --output_json load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

QUESTIONS = [
    "What is the capital of Australia?",
    "What is 17 + 25?",
    "How do I make green tea that is not bitter?",
    "Why is the sky blue during the day?",
    "Give me one tip to sleep better.",
    "What is a black hole?",
    "How can I save money on groceries?",
    "What should I pack for a day hike?",
]
RESPONSES = [
    ["Canberra.", "Sydney, its largest city.", "The capital of Australia is Canberra.", "Melbourne, I think."],
    ["42.", "17 + 25 = 42.", "32.", "It is 43."],
    ["Use water below boiling and steep two minutes.", "Boil it long.", "Add sugar.", "Steep it cooler and shorter."],
    ["Air scatters blue light more than red.", "Because of the ocean.", "Rayleigh scattering.", "No idea."],
    ["Keep a regular bedtime.", "Drink coffee at night.", "Avoid screens an hour before bed.", "Sleep less."],
    ["A region where gravity keeps even light in.", "A dark planet.", "A collapsed star's remnant.", "A hole."],
    ["Plan meals and buy staples in bulk.", "Buy only brands.", "Use a list and store brands.", "Eat out."],
    ["Water, snacks, a map and a jacket.", "Nothing.", "Sunscreen and water.", "A laptop."],
]


def chat(question: str) -> str:
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def samples(n: int):
    out = []
    for q, group in zip(QUESTIONS, RESPONSES):
        for r in (group * n)[:n]:
            out.append((chat(q) + r + "<|im_end|>", chat(q)))
    return out


def quantiles(latencies):
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    return {"p50_s": q[49], "p99_s": q[98]}


async def per_sample_round(http, url, data, n: int, clients: int):
    latencies, rewards = [], [None] * len(data)
    prompts = list(range(len(data) // n))

    async def one(k):
        query, prompt = data[k]
        t = time.perf_counter()
        r = await http.post(url, json={"query": [query], "prompts": [prompt], "labels": [""]}, timeout=600)
        latencies.append(time.perf_counter() - t)
        rewards[k] = r.json()["rewards"][0]

    async def client(c):
        for p in prompts[c::clients]:
            await asyncio.gather(*(one(p * n + j) for j in range(n)))

    await asyncio.gather(*(client(c) for c in range(clients)))
    return rewards, latencies


async def batched_round(http, url, data):
    t = time.perf_counter()
    body = {"query": [d[0] for d in data], "prompts": [d[1] for d in data], "labels": [""] * len(data)}
    r = await http.post(url, json=body, timeout=600)
    return r.json()["rewards"], [time.perf_counter() - t]


async def measure(url, data, n, clients, rounds):
    import httpx

    out = {}
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients * n + 4)) as http:
        for name in ("per_sample", "batched"):
            lat, t = [], time.perf_counter()
            for _ in range(rounds):
                if name == "per_sample":
                    rewards, got = await per_sample_round(http, url, data, n, clients)
                else:
                    rewards, got = await batched_round(http, url, data)
                lat += got
            seconds = time.perf_counter() - t
            out[name] = {
                "rewards": rewards,
                "requests": len(lat),
                "seconds": seconds,
                "samples_per_s": rounds * len(data) / seconds,
                **quantiles(lat),
            }
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="judge model (default: the embedded SmolLM2 judge)")
    p.add_argument("--mode", default="direct", choices=["direct", "reason"])
    p.add_argument("--max_new_tokens", type=int, default=256)
    p.add_argument("--n", type=int, default=4, help="samples per prompt")
    p.add_argument("--clients", type=int, default=8, help="concurrent per-sample clients")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--output_json", default=None)
    args = p.parse_args(argv)

    from trl_gram.default_model import default_model_path
    from trl_gram.judge import GramJudge
    from trl_gram.serving.server import BackgroundServer, ServeConfig, create_app

    judge = GramJudge.from_pretrained(
        args.model or default_model_path(), mode=args.mode, max_new_tokens=args.max_new_tokens, cache_size=0
    )
    data = samples(args.n)
    config = ServeConfig(group_size=args.n, group_timeout_s=120.0)
    with BackgroundServer(create_app(judge, config)) as url:
        result = asyncio.run(measure(url + "/get_reward", data, args.n, args.clients, args.rounds))
    a, b = result["per_sample"], result["batched"]
    diff = max(abs(x - y) for x, y in zip(a.pop("rewards"), b.pop("rewards")))
    report = {
        "model": args.model or "embedded default (SmolLM2-135M-Instruct)",
        "mode": args.mode,
        "prompts": len(QUESTIONS),
        "n": args.n,
        "clients": args.clients,
        "rounds": args.rounds,
        "rewards_equal": diff <= 1e-3,
        "max_reward_difference": diff,
        "per_sample": a,
        "batched": b,
        "throughput_ratio_per_sample_over_batched": a["samples_per_s"] / b["samples_per_s"],
    }
    print(json.dumps(report, indent=2))
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
