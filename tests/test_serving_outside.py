"""The serving paths as outside code meets them: verl loading the reward functions by file path (its own loader logic),
OpenRLHF 0.9.0's right-truncated prompts, the policy's chat markup, the server's log (one line per item error, no
traceback for a dropped connection), half-sent bodies, and a restarting server.

* verl (``verl/utils/import_utils.py``): ``load_extern_object(path, name)`` calls ``load_module(path)``, which, for a
  path that is not ``pkg://``, strips ``file://``, checks the file exists, builds a spec with
  ``importlib.util.spec_from_file_location`` under a name of its own (``custom_module_<hash>``), runs it with
  ``spec.loader.exec_module`` (any exception wrapped in ``RuntimeError("Error loading module ...")``) and does not add
  it to ``sys.modules``; ``get_custom_reward_fn`` then wraps a coroutine function for the reward loop.
  [`verl_load_extern_object`] below does the same.
* OpenRLHF 0.9.0 (``openrlhf/trainer/ppo_utils/experience_maker.py``): ``tokenize_fn(prompts, prompt_max_len,
  padding=False)`` tokenizes with ``add_special_tokens=False, max_length=prompt_max_len, truncation=True``, so a long
  prompt loses its end (the tokenizer's ``truncation_side``, ``right`` by default); the query is ``batch_decode`` of
  the prompt ids + the generated ids (stop string included), ``skip_special_tokens=False``.
"""

import asyncio
import importlib.util
import inspect
import logging
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
from tiny_models import sharp_direct_judge

from trl_gram.serving.scoring import chat_messages
from trl_gram.serving.server import BackgroundServer, ServeConfig, create_app

pytest.importorskip("fastapi")

QUESTIONS = ["What is 2 + 3?", "Write a poem about the sea and the sky, please, in three short lines of verse."]
RESPONSES = [["The answer is 5.", "It is 6.", "5"], ["The sea is big and blue.", "Sea.", "Waves and wind, the sky."]]
TOL = 1e-3
# The command docs/serving.md gives for `custom_reward_function.path`.
DOCUMENTED_PATH_COMMAND = "import trl_gram.serving.verl as m; print(m.__file__)"


@pytest.fixture(scope="module")
def judge(tokenizer):
    return sharp_direct_judge(tokenizer)


class LogLines(logging.Handler):
    """Every record of the trl_gram and uvicorn loggers, tracebacks included, as text lines."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.extend(self.format(record).splitlines())

    def __enter__(self):
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        for name in ("trl_gram", "uvicorn", "uvicorn.error"):
            logging.getLogger(name).addHandler(self)
        return self

    def __exit__(self, *exc):
        for name in ("trl_gram", "uvicorn", "uvicorn.error"):
            logging.getLogger(name).removeHandler(self)


def group_rewards(judge, question, responses):
    n = len(responses)
    pairs = [(i, j) for i in range(n) for j in range(n) if i < j]
    judged = judge.judge([question] * len(pairs), [responses[i] for i, _ in pairs], [responses[j] for _, j in pairs])
    wins = {(i, j): jd.prob for (i, j), jd in zip(pairs, judged)}
    wins.update({(j, i): 1 - p for (i, j), p in list(wins.items())})
    return [sum(wins[(i, j)] for j in range(n) if j != i) / (n - 1) for i in range(n)]


# --- verl: its own loader on the documented path -------------------------------------------------------------------
def verl_load_extern_object(module_path, object_name):
    """What verl's ``load_extern_object`` does with a file path (see the module docstring)."""
    if module_path.startswith("file://"):
        module_path = module_path[len("file://") :]
    if not os.path.exists(module_path):
        raise FileNotFoundError(module_path)
    name = f"custom_module_{hash(os.path.abspath(module_path))}"
    spec = importlib.util.spec_from_file_location(name, module_path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise RuntimeError(f"Error loading module from {module_path=}") from e
    if not hasattr(module, object_name):
        raise AttributeError(object_name)
    return getattr(module, object_name)


def documented_path():
    """``custom_reward_function.path`` exactly as docs/serving.md computes it, in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", DOCUMENTED_PATH_COMMAND], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_the_documented_verl_command_is_the_one_tested():
    docs = open(os.path.join(os.path.dirname(__file__), "..", "docs", "serving.md")).read()
    lines = [line for line in docs.splitlines() if "custom_reward_function.path=" in line]
    assert len(lines) >= 2  # the reward loop, the legacy batch manager (and the router path)
    assert all(f'custom_reward_function.path=$(python -c "{DOCUMENTED_PATH_COMMAND}")' in line for line in lines)


def test_verl_loads_both_functions_by_file_path_and_they_score(judge):
    path = documented_path()
    assert path.endswith(os.path.join("trl_gram", "serving", "verl.py")) and os.path.isfile(path)
    compute_score = verl_load_extern_object(path, "compute_score")
    compute_score_batch = verl_load_extern_object("file://" + path, "compute_score_batch")
    assert compute_score.__module__.startswith("custom_module_") and compute_score.__module__ not in sys.modules
    assert inspect.iscoroutinefunction(compute_score) and not inspect.iscoroutinefunction(compute_score_batch)
    config = ServeConfig(group_size=3, group_timeout_s=30.0, batch_window_ms=20)
    expected = [r for q, group in zip(QUESTIONS, RESPONSES) for r in group_rewards(judge, q, group)]
    with BackgroundServer(create_app(judge, config)) as url:

        async def reward_loop():  # one task per response, reward_kwargs merged into each call
            calls = [
                compute_score(data_source="hh", solution_str=r, ground_truth="", extra_info={"question": q}, url=url)
                for q, group in zip(QUESTIONS, RESPONSES)
                for r in group
            ]
            return await asyncio.gather(*calls)

        assert [g["score"] for g in asyncio.run(reward_loop())] == pytest.approx(expected, abs=TOL)
        got = compute_score_batch(
            data_sources=["hh"] * 6,
            solution_strs=[r for group in RESPONSES for r in group],
            ground_truths=[None] * 6,
            extra_infos=[{"question": q} for q in QUESTIONS for _ in range(3)],
            url=url,
        )
        assert got == pytest.approx(expected, abs=TOL)


# --- OpenRLHF 0.9.0: prompts cut from the right; the policy's chat markup -----------------------------------------
def openrlhf_0_9_0_queries(tokenizer, prompts, responses, prompt_max_len):
    assert tokenizer.truncation_side == "right"  # the usual tokenizers' default, which 0.9.0 does not change
    prompt_ids = tokenizer(prompts, add_special_tokens=False, max_length=prompt_max_len, truncation=True)["input_ids"]
    generated = [tokenizer(r + "<|im_end|>", add_special_tokens=False)["input_ids"] for r in responses]
    return tokenizer.batch_decode([p + g for p, g in zip(prompt_ids, generated)], skip_special_tokens=False)


def test_openrlhf_0_9_0_right_truncated_prompts_are_scored(judge, tokenizer):
    system = {"role": "system", "content": "You are a helpful assistant."}
    prompts = [
        tokenizer.apply_chat_template(
            [system, {"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        for q in QUESTIONS
    ]
    budget = len(tokenizer(prompts[0], add_special_tokens=False)["input_ids"])  # the first fits, the second does not
    assert len(tokenizer(prompts[1], add_special_tokens=False)["input_ids"]) > budget
    all_prompts = [p for p in prompts for _ in range(3)]
    queries = openrlhf_0_9_0_queries(tokenizer, all_prompts, [r for g in RESPONSES for r in g], budget)
    assert prompts[1] not in queries[3] and "<|im_start|>assistant" not in queries[3]  # the query holds the head
    with BackgroundServer(create_app(judge, ServeConfig(batch_window_ms=20))) as url:
        body = httpx.post(f"{url}/get_reward", json={"query": queries, "prompts": all_prompts, "labels": [""] * 6})
    answer = body.json()
    assert answer["failures"] == [None] * 6
    # The judge reads the question without the policy's markup: rewards as for the plain question.
    expected = [r for q, group in zip(QUESTIONS, RESPONSES) for r in group_rewards(judge, q, group)]
    assert answer["rewards"] == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize(
    "rendered",
    [
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n",
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user"
        "<|end_header_id|>\n\n{q}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        "<bos><start_of_turn>user\n{q}<end_of_turn>\n<start_of_turn>model\n",
        "<|system|>\nBe brief.<|end|>\n<|user|>\n{q}<|end|>\n<|assistant|>\n",
        "<s>[INST] {q} [/INST]",
        "\n\nHuman: {q}\n\nAssistant:",
    ],
    ids=["chatml", "llama-3", "gemma", "phi-3", "mistral", "human-assistant"],
)
def test_chat_markup_of_common_templates_is_read_as_turns(rendered):
    q = "What is 2 + 3? Answer: briefly."
    prompt = rendered.format(q=q)
    for token in ServeConfig().strip_tokens:
        prompt = prompt.replace(token, "")
    messages = chat_messages(prompt)
    assert [m for m in messages if m["role"] != "system"] == [{"role": "user", "content": q}]
    assert chat_messages(q) is None and chat_messages("Human beings: what are they?") is None


def test_chat_markup_no_longer_moves_rewards(judge, tokenizer):
    plain = group_rewards(judge, QUESTIONS[0], RESPONSES[0])
    prompts = {
        "chatml": "<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n<|im_start|>user\n{q}<|im_end|>\n"
        "<|im_start|>assistant\n",
        "llama-3": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{q}<|eot_id|><|start_header_id|>"
        "assistant<|end_header_id|>\n\n",
    }
    with BackgroundServer(create_app(judge, ServeConfig(batch_window_ms=20))) as url:
        for template in prompts.values():
            prompt = template.format(q=QUESTIONS[0])
            queries = [f"{prompt}{r}<|im_end|>" for r in RESPONSES[0]]
            answer = httpx.post(f"{url}/get_reward", json={"query": queries, "prompts": [prompt] * 3}).json()
            assert answer["rewards"] == pytest.approx(plain, abs=TOL)


# --- the server's log, dropped and half-sent connections, the /reward counter ----------------------------------------
def raw_request(url, path, declared, sent):
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + sent)
    return sock


def wait_for(predicate, what):
    for _ in range(1000):  # a bound on a loop that normally ends at once, not a timing assertion
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(what)


def test_item_errors_are_logged_and_dropped_connections_leave_no_traceback(judge, tokenizer):
    config = ServeConfig(batch_window_ms=20, body_timeout_s=0.5)
    app = create_app(judge, config)
    server = BackgroundServer(app)
    with LogLines() as log, server as url:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": QUESTIONS[0]}], tokenize=False)
        queries = [prompt + r for r in RESPONSES[0]] + ["something else", prompt + "x"]
        labels = ["", "", "", "", {"x": 1}]
        body = httpx.post(f"{url}/get_reward", json={"query": queries, "prompts": [prompt] * 5, "labels": labels})
        assert body.json()["failures"][:3] == [None] * 3
        errors = [line for line in log.lines if line.startswith("WARNING") and "could not be scored" in line]
        assert len(errors) == 2 and "`query[3]`" in errors[0] and "`labels[4]`" in errors[1]

        # 20 connections that send half their body and hang up.
        before = len(log.lines)
        for _ in range(20):
            raw_request(url, "/get_reward", 1000, b'{"query": ["abc').close()
        stats = lambda: httpx.get(f"{url}/stats").json()["items"]  # noqa: E731
        wait_for(lambda: stats()["dropped"] == 20, "the dropped connections were not noticed")
        dropped = log.lines[before:]
        assert not any("Traceback" in line or "Exception in ASGI" in line for line in dropped), dropped
        assert len([line for line in dropped if "disconnected" in line]) == 20 and len(dropped) == 20

        # 20 connections that send half their body and stay: each is answered 408 and closed.
        socks = [raw_request(url, "/reward", 1000, b'{"prompts": ["q"') for _ in range(20)]
        for sock in socks:
            sock.settimeout(60)
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
            sock.close()
            assert answer.startswith(b"HTTP/1.1 408") and b"body_timeout_s" in answer
        assert stats()["dropped"] == 40
        assert not any("Traceback" in line for line in log.lines)


def test_reward_stats_count_only_responses_with_nothing_to_compare(judge):
    with BackgroundServer(create_app(judge, ServeConfig(batch_window_ms=20))) as url:
        body = {"prompts": ["q", "q", 7, "lone"], "completions": ["a", "b", "c", "d"], "group_across_requests": False}
        answer = httpx.post(f"{url}/reward", json=body).json()
    assert answer["failures"][2] is not None and answer["rewards"][3] is None
    assert answer["stats"] == {"unscored": 2, "nothing_to_compare": 1}


# --- a restarting server --------------------------------------------------------------------------------------------
def test_remote_reward_arrives_soon_after_a_restarting_server_is_back(judge):
    """The server answers 503 while its judge loads (about 1.5 s, as after a restart); the reward must arrive within
    one capped retry wait of the moment it is ready."""
    from trl_gram.serving import RemoteGenerativeRewardFunction

    back = {}

    def load():
        time.sleep(1.5)
        back["at"] = time.monotonic()
        return judge

    app = create_app(judge_factory=load, config=ServeConfig(batch_window_ms=20))
    with BackgroundServer(app) as url:
        reward = RemoteGenerativeRewardFunction(url, timeout=60, backoff=0.2, max_backoff=0.5)
        got = asyncio.run(reward.score(["q"] * 2, ["a", "bb"]))
        arrived = time.monotonic()
        start = time.monotonic()
        again = asyncio.run(reward.score(["q"] * 2, ["a", "bb"]))  # one call to a ready server, for scale
        one_call = time.monotonic() - start
    assert got == again and None not in got
    overshoot = arrived - back["at"]
    assert overshoot <= reward.policy.max_backoff + 2 * one_call, (overshoot, one_call)


def test_body_timeout_is_a_documented_setting():
    with pytest.raises(ValueError, match="body_timeout_s"):
        ServeConfig(body_timeout_s=0)
