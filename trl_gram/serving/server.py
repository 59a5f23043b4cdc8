"""HTTP reward server: a GRAM judge behind the request shapes that RL engines already send.

Endpoints (JSON; ``Authorization: Bearer <token>`` when an API key is set, except for health and readiness):

* ``POST /get_reward``: OpenRLHF's ``--remote_rm_url`` contract: ``{"query": [prompt + response, ...], "prompts":
  [...], "labels": [...]}`` → ``{"rewards": [...], "scores": [...]}``. Each response is its query minus its prompt
  (found inside the query; special-token strings listed in ``strip_tokens`` are removed first). With non-empty
  labels, a response's reward is its win probability against its label (a reference answer); otherwise against the
  other responses of the same prompt in the request (``reference``). Failed or unscorable responses get
  ``failure_reward`` (default: the neutral value of the output scale).
* ``POST /reward``: the TRL-shaped form used by :class:`~trl_gram.serving.remote_reward.RemoteGenerativeRewardFunction`:
  ``{"prompts": [...], "completions": [...], "references": [...]?, "reference": "group"|"pivot"?}`` →
  ``{"rewards": [float | null, ...], "stats": {...}}`` (strings or chat messages; ``null`` for failures).
* ``POST /judge``: one pair ``{"question", "response_a", "response_b", "mode"?, "swap"?}`` → ``{"prob", "label",
  "rationale", "agreement", "failure"}`` (``prob`` = P(response_a is better), ``label`` "A"/"B"), or a batch
  ``{"pairs": [{...}, ...]}`` → ``{"results": [...]}``.
* ``GET /health`` (the process is up), ``GET /ready`` (the judge is loaded; 503 before), ``GET /stats``.

Requests from concurrent callers are judged together (:class:`~trl_gram.serving.batcher.MicroBatcher`). Errors are 4xx
JSON ``{"error": ...}``: 400 malformed JSON or fields, 401 bad token, 413 too large, 503 not ready.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' `Request` annotations at runtime.
import contextlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from transformers.utils import logging

from . import scoring
from .batcher import MicroBatcher

logger = logging.get_logger(__name__)

DEFAULT_STRIP_TOKENS = (
    "<|endoftext|>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|end|>",
    "</s>",
    "<pad>",
    "<|pad|>",
    "<eos>",
    "<end_of_turn>",
)


@dataclass
class ServeConfig:
    """Settings of the reward server.

    Args:
        host: Interface to listen on (``0.0.0.0`` to accept other machines).
        port: TCP port.
        api_key: When set, judge endpoints require ``Authorization: Bearer <api_key>``.
        max_request_bytes: Largest request body accepted (413 above).
        max_pairs_per_request: Most comparisons one request may ask for (413 above).
        batch_window_ms: How long the batcher waits for concurrent requests to join a batch.
        max_batch_pairs: Pairs per judge call.
        reference: How completions without a reference are compared within their prompt group: ``"group"``
            (all pairs) or ``"pivot"`` (each with the group's first).
        output: Reward scale: ``"prob"`` (win probability), ``"logit"`` or ``"centered"`` (prob − 0.5).
        failure_reward: Reward sent to OpenRLHF for responses that could not be scored (``None``: neutral, 0.5 for
            ``prob`` and 0 otherwise). ``/reward`` returns ``null`` instead.
        strip_tokens: Special-token strings removed from OpenRLHF queries and prompts before judging.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_request_bytes: int = 8 * 2**20
    max_pairs_per_request: int = 4096
    batch_window_ms: float = 10.0
    max_batch_pairs: int = 512
    reference: str = "group"
    output: str = "prob"
    failure_reward: float | None = None
    strip_tokens: tuple[str, ...] = field(default_factory=lambda: DEFAULT_STRIP_TOKENS)

    def __post_init__(self):
        if self.reference not in scoring.REFERENCES:
            raise ValueError(f"`reference` must be one of {scoring.REFERENCES}, got {self.reference!r}.")
        if self.output not in scoring.OUTPUTS:
            raise ValueError(f"`output` must be one of {scoring.OUTPUTS}, got {self.output!r}.")
        for name in ("max_request_bytes", "max_pairs_per_request", "max_batch_pairs"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be positive.")


class RequestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _field(body: dict, name: str, kind=None, required: bool = True):
    if name not in body or body[name] is None:
        if required:
            raise RequestError(400, f"Missing field `{name}`.")
        return None
    value = body[name]
    if kind is not None and not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise RequestError(400, f"Field `{name}` must be {names}, got {type(value).__name__}.")
    return value


def _text_or_messages(value, where: str):
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(m, dict) and "role" in m for m in value):
        return value
    raise RequestError(400, f"`{where}` must be a string or a list of {{role, content}} messages.")


def _strip(text: str, tokens) -> str:
    for t in tokens:
        text = text.replace(t, "")
    return text


def split_openrlhf(queries, prompts, tokens) -> tuple[list[str], list[str]]:
    """Questions and responses from OpenRLHF's ``query`` (prompt + response) and ``prompts``."""
    questions, responses = [], []
    for i, (query, prompt) in enumerate(zip(queries, prompts)):
        if not isinstance(query, str) or not isinstance(prompt, str):
            raise RequestError(400, f"`query[{i}]` and `prompts[{i}]` must be strings.")
        query, prompt = _strip(query, tokens), _strip(prompt, tokens)
        at = query.find(prompt)
        if at < 0:
            raise RequestError(400, f"`query[{i}]` does not contain `prompts[{i}]`: cannot tell the response apart.")
        questions.append(prompt.strip())
        responses.append(query[at + len(prompt) :].strip())
    return questions, responses


def create_app(
    judge=None,
    config: ServeConfig | None = None,
    judge_factory: Callable[[], object] | None = None,
):
    """The FastAPI application. Pass a loaded ``judge``, or a ``judge_factory`` run in a background thread at startup
    (``/ready`` answers 503 until it returns)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    if (judge is None) == (judge_factory is None):
        raise ValueError("Pass exactly one of `judge` and `judge_factory`.")
    config = config or ServeConfig()
    state = {"batcher": None, "error": None, "started": time.time()}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        if state["batcher"] is not None:
            state["batcher"].stop()

    app = FastAPI(title="trl-gram reward server", lifespan=lifespan)
    app.state.trl_gram = state

    def install(j):
        state["batcher"] = MicroBatcher(j, window_s=config.batch_window_ms / 1000, max_pairs=config.max_batch_pairs)

    if judge is not None:
        install(judge)
    else:

        def load():
            try:
                install(judge_factory())
                logger.info("Judge loaded: the server is ready.")
            except Exception as e:  # noqa: BLE001
                state["error"] = repr(e)
                logger.error(f"Loading the judge failed: {e!r}")

        threading.Thread(target=load, name="trl-gram-load", daemon=True).start()

    async def body_of(request: Request) -> dict:
        if config.api_key is not None:
            header = request.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), config.api_key):
                raise RequestError(401, "Missing or wrong bearer token (header `Authorization: Bearer <token>`).")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > config.max_request_bytes:
            raise RequestError(413, f"Request body over {config.max_request_bytes} bytes.")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > config.max_request_bytes:
                raise RequestError(413, f"Request body over {config.max_request_bytes} bytes.")
            chunks.append(chunk)
        try:
            body = json.loads(b"".join(chunks))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RequestError(400, f"Malformed JSON: {e}") from None
        if not isinstance(body, dict):
            raise RequestError(400, "The request body must be a JSON object.")
        if state["batcher"] is None:
            raise RequestError(503, "The judge is not loaded yet." if state["error"] is None else state["error"])
        return body

    async def judge_pairs(q, a, b, mode=None, swap=None):
        if len(q) > config.max_pairs_per_request:
            raise RequestError(
                413, f"{len(q)} comparisons: more than `max_pairs_per_request`={config.max_pairs_per_request}."
            )
        try:
            return await state["batcher"].judge_async(q, a, b, mode=mode, swap=swap)
        except ValueError as e:  # bad input caught by the judge (e.g. a malformed conversation)
            raise RequestError(400, str(e)) from None

    async def rewards_for(prompts, completions, references, reference):
        try:
            comparisons = scoring.plan(prompts, completions, references, reference)
        except ValueError as e:
            raise RequestError(400, str(e)) from None
        judgments = await judge_pairs(
            [c[1] for c in comparisons], [c[2] for c in comparisons], [c[3] for c in comparisons]
        )
        values, stats = scoring.aggregate(len(completions), comparisons, judgments)
        return [scoring.transform(v, config.output) for v in values], stats

    def error_response(e: RequestError):
        headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
        return JSONResponse({"error": e.message}, status_code=e.status, headers=headers)

    @app.exception_handler(RequestError)
    async def _request_error(request, e: RequestError):
        return error_response(e)

    @app.get("/health")
    async def health():
        return {"status": "ok", "uptime_s": time.time() - state["started"]}

    @app.get("/ready")
    async def ready():
        if state["batcher"] is None:
            return JSONResponse({"ready": False, "error": state["error"]}, status_code=503)
        return {"ready": True}

    @app.get("/stats")
    async def stats():
        return {"batcher": dict(state["batcher"].stats) if state["batcher"] else None}

    @app.post("/judge")
    async def judge_endpoint(request: Request):
        body = await body_of(request)
        mode, swap = _field(body, "mode", str, False), _field(body, "swap", str, False)
        if "pairs" in body:
            pairs = _field(body, "pairs", list)
            if not all(isinstance(p, dict) for p in pairs):
                raise RequestError(400, "`pairs` must be a list of objects with question, response_a, response_b.")
        else:
            pairs = [body]
        q, a, b = [], [], []
        for k, p in enumerate(pairs):
            where = f"pairs[{k}]." if "pairs" in body else ""
            q.append(_text_or_messages(_field(p, "question"), where + "question"))
            a.append(_text_or_messages(_field(p, "response_a"), where + "response_a"))
            b.append(_text_or_messages(_field(p, "response_b"), where + "response_b"))
        out = await judge_pairs(q, a, b, mode=mode, swap=swap)
        results = [
            {
                "prob": None if jd.prob != jd.prob else jd.prob,
                "label": jd.label,
                "rationale": jd.rationale,
                "agreement": jd.agreement,
                "failure": jd.failure,
            }
            for jd in out
        ]
        return {"results": results} if "pairs" in body else results[0]

    @app.post("/reward")
    async def reward_endpoint(request: Request):
        body = await body_of(request)
        prompts, completions = _field(body, "prompts", list), _field(body, "completions", list)
        references = _field(body, "references", list, False)
        reference = _field(body, "reference", str, False) or config.reference
        prompts = [_text_or_messages(p, f"prompts[{i}]") for i, p in enumerate(prompts)]
        completions = [_text_or_messages(c, f"completions[{i}]") for i, c in enumerate(completions)]
        rewards, stats = await rewards_for(prompts, completions, references, reference)
        return {"rewards": rewards, "stats": stats}

    @app.post("/get_reward")
    async def openrlhf_endpoint(request: Request):
        body = await body_of(request)
        queries = _field(body, "query", list)
        prompts = _field(body, "prompts", list, False)
        if prompts is None:
            raise RequestError(400, "Missing field `prompts`: the judge needs each prompt to tell the response apart.")
        if len(prompts) != len(queries):
            raise RequestError(400, f"`prompts` has {len(prompts)} items but `query` has {len(queries)}.")
        labels = _field(body, "labels", list, False)
        if labels is not None and len(labels) != len(queries):
            raise RequestError(400, f"`labels` has {len(labels)} items but `query` has {len(queries)}.")
        questions, responses = split_openrlhf(queries, prompts, config.strip_tokens)
        references = None
        if labels is not None and any(isinstance(x, str) and x.strip() for x in labels):
            references = [x if isinstance(x, str) and x.strip() else None for x in labels]
        rewards, _ = await rewards_for(questions, responses, references, config.reference)
        fallback = scoring.neutral(config.output) if config.failure_reward is None else config.failure_reward
        rewards = [fallback if r is None else r for r in rewards]
        return {"rewards": rewards, "scores": rewards}

    return app


class BackgroundServer:
    """Run an app with uvicorn in a thread (tests, notebooks): ``with BackgroundServer(app) as url: ...``."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name="trl-gram-server", daemon=True)
        self.host = host

    def __enter__(self) -> str:
        self.thread.start()
        for _ in range(500):  # bounded wait for startup (up to 10 s)
            if self.server.started:
                break
            time.sleep(0.02)
        if not self.server.started:
            raise RuntimeError("The reward server did not start.")
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://{self.host}:{port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)
