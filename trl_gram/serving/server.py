"""HTTP reward server: a GRAM judge behind the request shapes that RL engines already send (see ``docs/serving.md``).

Endpoints (JSON):

* ``POST /get_reward``: OpenRLHF's ``--remote_rm_url``: ``{"query": [prompt + response, ...], "prompts": [...],
  "labels": [...]}`` -> ``{"rewards", "scores", "failures", "compared"}``. Works for one batched request per rollout
  batch (OpenRLHF 0.9) and for one request per sample (OpenRLHF >= 0.9.1): responses of one prompt that arrive in
  separate requests are grouped ([`~serving.grouping.GroupCollector`]).
* ``POST /reward``: the TRL-shaped form (``prompts``, ``completions``, ``references``?, ``reference``?, and any of
  the group-comparison settings ``schedule``, ``schedule_degree``, ``aggregate``, ``second_order``,
  ``second_order_margin``, ``max_judge_calls_per_group``, ``length_control``, ``schedule_seed``?) used by
  [`~serving.remote_reward.RemoteGenerativeRewardFunction`] and the verl functions (``null`` for failures);
  ``"group_across_requests": false`` when the request holds whole groups (nothing waits for other requests). The
  answer: ``rewards``, ``failures``, ``compared`` and ``swap_agreement`` per item (``null`` when none of its
  comparisons was judged in both orders).
* ``POST /judge``: one pair ``{"question", "response_a", "response_b"}`` or ``{"pairs": [...]}``.
* ``GET /health``, ``GET /ready`` (503 until the judge is loaded; lists the limits), ``GET /stats``.

Every item of a reward request is scored on its own: an item that cannot be scored gets the failure value and its
reason in ``failures``; only a request malformed as a whole gets a 4xx. With an API key, every endpoint but health and
readiness needs it, as ``Authorization: Bearer <key>``, as ``?api_key=<key>``, or in the path (``/key/<key>/...``) for
clients that only take a URL.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' `Request` annotations at runtime.
import asyncio
import contextlib
import dataclasses
import json
import random
import re
import threading
import time
from collections.abc import Callable

from transformers.utils import logging

from .. import adaptive, pairing
from . import scoring
from .auth import KeyMiddleware
from .batcher import MicroBatcher
from .config import ServeConfig
from .grouping import GroupCollector
from .metrics import CONTENT_TYPE, ServerMetrics

logger = logging.get_logger(__name__)

__all__ = ["BackgroundServer", "RequestError", "ServeConfig", "create_app"]


_JUDGE_ARG = re.compile(r"`?(questions|responses_1|responses_2)\[\d+\]`?")


def rename_judge_args(message: str, question: str, first: str, second: str) -> str:
    """A judge error about its own arguments (``responses_2[0]``) told in the client's field names."""
    names = {"questions": question, "responses_1": first, "responses_2": second}
    return _JUDGE_ARG.sub(lambda m: f"`{names[m.group(1)]}`", message)


NOTHING_TO_COMPARE = "nothing to compare with"  # how the failure of a response alone in its group starts


class RequestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _judge_setting(judge, name, default):
    config = getattr(judge, "config", None)
    return getattr(config, name, default)


def create_app(judge=None, config: ServeConfig | None = None, judge_factory: Callable[[], object] | None = None):
    """The FastAPI application.

    Args:
        judge: A loaded [`~judge.GramJudge`] (or anything with its ``judge`` method).
        config ([`ServeConfig`], *optional*): Server settings.
        judge_factory (`Callable`, *optional*): Instead of ``judge``: run in a background thread at startup
            (``/ready`` answers 503 until it returns).
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    if (judge is None) == (judge_factory is None):
        raise ValueError("Pass exactly one of `judge` and `judge_factory`.")
    config = config or ServeConfig()
    state = {"batcher": None, "judge": None, "collector": None, "error": None, "started": time.time()}
    counters = {"items": 0, "unscored": 0, "item_errors": 0, "nothing_to_compare": 0, "refused": 0, "dropped": 0}
    costs = {"judge_calls": 0, "all_pairs_calls": 0, "second_orders": 0}
    defaults = config.comparison_settings()
    rng = random.Random(defaults.schedule_seed)

    def spent(cost: adaptive.JudgeCost) -> None:
        for key in costs:
            costs[key] += getattr(cost, key)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        if state["batcher"] is not None:
            state["batcher"].stop()

    app = FastAPI(title="trl-gram reward server", lifespan=lifespan)
    app.state.trl_gram = state
    metrics = app.state.metrics = ServerMetrics()
    install_metrics(app, metrics, state, counters)
    if config.api_key is not None:
        app.add_middleware(KeyMiddleware, key=config.api_key)

    def install(j):
        state["judge"] = j
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
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > config.max_request_bytes:
            raise RequestError(413, f"Request body over {config.max_request_bytes} bytes.")
        from starlette.requests import ClientDisconnect

        chunks, size = [], 0
        try:
            async with asyncio.timeout(config.body_timeout_s):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > config.max_request_bytes:
                        raise RequestError(413, f"Request body over {config.max_request_bytes} bytes.")
                    chunks.append(chunk)
        except ClientDisconnect:  # the client is gone: one line, no traceback, nothing to answer
            counters["dropped"] += 1
            logger.warning(f"A client disconnected before sending its whole request body ({request.url.path}).")
            raise RequestError(400, "The client disconnected before sending its whole body.") from None
        except TimeoutError:
            counters["dropped"] += 1
            logger.warning(f"A request body was not received within body_timeout_s={config.body_timeout_s:g} s.")
            raise RequestError(
                408, f"The request body did not arrive within {config.body_timeout_s:g} s (`body_timeout_s`)."
            ) from None
        try:
            body = json.loads(b"".join(chunks))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise RequestError(400, f"Malformed JSON: {e}") from None
        if not isinstance(body, dict):
            raise RequestError(400, "The request body must be a JSON object.")
        if state["batcher"] is None:
            raise RequestError(503, "The judge is not loaded yet." if state["error"] is None else state["error"])
        return body

    def options(mode, swap):
        j = state["judge"]
        mode = mode or _judge_setting(j, "mode", "reason")
        swap = swap or _judge_setting(j, "swap", "both")
        return mode, swap

    def generated_tokens(pairs: int, mode: str, swap: str, votes: int | None = None) -> int:
        if mode != "reason":
            return 0
        j = state["judge"]
        orders = 2 if swap == "both" else 1
        votes = votes or _judge_setting(j, "votes", 1)
        return pairs * orders * votes * _judge_setting(j, "max_new_tokens", 1024)

    def pair_limit() -> int:
        mode, swap = options(None, None)
        per_pair = generated_tokens(1, mode, swap)
        by_tokens = config.max_generated_tokens_per_request // per_pair if per_pair else config.max_pairs_per_request
        return max(1, min(config.max_pairs_per_request, by_tokens))

    async def judge_pairs(q, a, b, mode=None, swap=None, votes=None, check=True):
        if check:
            if len(q) > config.max_pairs_per_request:
                raise RequestError(
                    413, f"{len(q)} comparisons: more than `max_pairs_per_request`={config.max_pairs_per_request}."
                )
            tokens = generated_tokens(len(q), *options(mode, swap), votes)
            if tokens > config.max_generated_tokens_per_request:
                raise RequestError(
                    413,
                    f"{len(q)} comparisons could generate {tokens} tokens: more than "
                    f"`max_generated_tokens_per_request`={config.max_generated_tokens_per_request}; "
                    "split the request.",
                )
        started, failed = time.monotonic(), True
        try:
            out = await state["batcher"].judge_async(q, a, b, mode=mode, swap=swap, votes=votes)
            failed = False
            return out
        finally:
            if len(q):  # empty calls (every item waits for its group) are not judge calls
                metrics.judge_call(time.monotonic() - started, failed)

    def collector() -> GroupCollector:
        if state["collector"] is None:
            state["collector"] = GroupCollector(
                lambda q, a, b, **kw: judge_pairs(q, a, b, check=False, **kw),
                config.group_size,
                config.group_timeout_s,
                config.reference,
                max_wait_s=config.group_max_wait_s,
                settings=defaults,
                rng=rng,
                on_cost=spent,
            )
        return state["collector"]

    def settings_of(body: dict) -> pairing.ComparisonConfig:
        """The server's group-comparison settings with the request's own values (400 on a bad one)."""
        given = {f: body[f] for f in pairing.COMPARISON_FIELDS if f in body}
        try:
            return dataclasses.replace(defaults, **given) if given else defaults
        except ValueError as e:
            raise RequestError(400, str(e)) from None

    def members_that_count(items, bad, in_request) -> list[int]:
        """Tell the collector each prompt's sample count in this request (it warns when that disagrees with
        `group_size`); the unreadable items whose prompt is known and whose group forms across requests: they
        count toward it, so their siblings do not wait the deadline for them."""
        for count in in_request.values():
            collector().note_client_n(count)
        return [
            i
            for i in sorted(bad)
            if items[i].key is not None and not collector().complete_in(in_request[items[i].key])
        ]

    async def score(
        items,
        reference,
        across: bool = True,
        fields=("prompts", "completions", "references"),
        settings=None,
        health=None,
    ):
        """``(probs, failures, compared)`` for the items: errors, references, groups in the request, groups that
        form across requests (``health``: a list per item, filled with its comparisons' swap agreements)."""
        settings = settings or defaults
        n = len(items)
        probs, failures, compared = [None] * n, [it.error for it in items], [0] * n
        agreements = health if health is not None else [[] for _ in range(n)]  # swap agreement per item
        prompts = [it.prompt for it in items]
        completions = [it.completion for it in items]
        references = [it.reference for it in items]
        bad = {i for i, it in enumerate(items) if it.error is not None}
        grouped = [i for i, it in enumerate(items) if scoring.is_grouped(it)]
        cross = []  # groups of this request too small to judge alone: they wait for the other requests
        if across and config.group_timeout_s > 0:
            in_request = {}  # items per prompt in this request, bad or referenced ones included
            for it in items:
                in_request[it.key] = in_request.get(it.key, 0) + 1
            for members in pairing.groups(prompts, grouped):
                if not collector().complete_in(in_request.get(items[members[0]].key, len(members))):
                    cross.append(members)
            unreadable = members_that_count(items, bad, in_request)
        else:
            unreadable = []
        waiting = {i for m in cross for i in m}
        comparisons = pairing.plan(
            prompts, completions, references, reference, skip=bad | waiting, settings=settings, rng=rng
        )

        async def local():
            judgments, cost = await adaptive.run_async(judge_pairs, comparisons, settings)
            spent(cost)
            result = pairing.score_completions(n, comparisons, judgments, method=settings.aggregate)
            if settings.length_control:
                lengths = [pairing.text_length(c) if c is not None else 0 for c in completions]
                links = [(c[0], c[4]) for c in comparisons]
                result.probs = pairing.length_controlled(result.probs, lengths, pairing.components(n, links))
            for (i, _, _, _, j), jd in zip(comparisons, judgments):
                if jd is not None and jd.agreement is not None:
                    for k in (i, j):
                        if k is not None:
                            agreements[k].append(float(jd.agreement))
            raised = {}  # judge errors, told in the client's field names
            for (i, _, _, _, j), jd in zip(comparisons, judgments):
                if jd is not None and not jd.runs and jd.failure:
                    other = f"{fields[2]}[{i}]" if j is None else f"{fields[1]}[{j}]"
                    told = rename_judge_args(jd.failure, f"{fields[0]}[{i}]", f"{fields[1]}[{i}]", other)
                    for k in (i, j):
                        if k is not None:
                            raised.setdefault(k, told)
            for i in range(n):
                if i in bad or i in waiting:
                    continue
                probs[i], compared[i] = result.probs[i], result.compared[i]
                if probs[i] is None:
                    first = result.first[i]
                    failures[i] = (
                        f"every comparison failed: {raised.get(i, first.failure)}"
                        if first is not None
                        else f"{NOTHING_TO_COMPARE}: no other response to this prompt and no reference"
                    )
                    if first is None:
                        counters["nothing_to_compare"] += 1
                        logger.warning("A response had nothing to compare with.")
                    else:
                        logger.warning(f"An item could not be scored: {failures[i]}")

        async def wait_for_group(members):
            key = items[members[0]].key
            out = await collector().add(
                [prompts[i] for i in members], [completions[i] for i in members], key=key, settings=settings
            )
            for i, (p, info) in zip(members, out):
                probs[i], compared[i], failures[i] = p, info["compared"], info["failure"]
                if info.get("agreement") is not None:
                    agreements[i].append(info["agreement"])
                if failures[i] and not failures[i].startswith(NOTHING_TO_COMPARE):  # that one is logged by the group
                    logger.warning(f"An item could not be scored: {failures[i]}")

        async def count_in_group(i):  # an unreadable member: its group counts it; it keeps its own error
            await collector().add([prompts[i]], [None], key=items[i].key, settings=settings)

        await asyncio.gather(local(), *(wait_for_group(m) for m in cross), *(count_in_group(i) for i in unreadable))
        for i in sorted(bad):  # errors found reading the request (the judge's own failures are logged above)
            logger.warning(f"An item could not be scored: {failures[i]}")
        counters["items"] += n
        counters["item_errors"] += len(bad)
        counters["unscored"] += sum(p is None for p in probs)
        return probs, failures, compared

    def error_response(e: RequestError):
        if e.status >= 400:
            counters["refused"] += 1
        headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
        if e.status == 408:  # the rest of the body may still come: close the connection
            headers = {"Connection": "close"}
        return JSONResponse({"error": e.message}, status_code=e.status, headers=headers)

    @app.exception_handler(RequestError)
    async def _request_error(request, e: RequestError):
        return error_response(e)

    @app.exception_handler(Exception)
    async def _unexpected(request, e: Exception):  # never a plain-text 500
        logger.error(f"Unexpected error on {request.url.path}: {type(e).__name__}: {e}")
        return JSONResponse({"error": f"internal error: {type(e).__name__}"}, status_code=500)

    @app.get("/health")
    async def health():
        return {"status": "ok", "uptime_s": time.time() - state["started"]}

    @app.get("/ready")
    async def ready():
        if state["batcher"] is None:
            return JSONResponse({"ready": False, "error": state["error"]}, status_code=503)
        limits = {
            "max_request_bytes": config.max_request_bytes,
            "max_pairs_per_request": pair_limit(),
            "group_size": config.group_size,
            "group_timeout_s": config.group_timeout_s,
        }
        return {"ready": True, "limits": limits}

    @app.get("/stats")
    async def stats():
        groups = dict(state["collector"].stats) if state["collector"] else None
        nothing = counters["nothing_to_compare"] + (groups["nothing_to_compare"] if groups else 0)
        return {
            "batcher": dict(state["batcher"].stats) if state["batcher"] else None,
            "items": {**counters, "nothing_to_compare": nothing},
            "groups": groups,
            "judge_calls": {**costs, "saved": 1 - costs["judge_calls"] / costs["all_pairs_calls"]}
            if costs["all_pairs_calls"]
            else dict(costs),
        }

    @app.post("/judge")
    async def judge_endpoint(request: Request):
        body = await body_of(request)
        mode, swap = body.get("mode"), body.get("swap")
        own = dict(zip(("mode", "swap"), options(None, None)))
        for name, value in (("mode", mode), ("swap", swap)):
            if value is None:
                continue
            if not isinstance(value, str):
                raise RequestError(400, f"Field `{name}` must be a string.")
            if not config.allow_overrides and value != own[name]:
                raise RequestError(
                    403,
                    f"This server judges with {name}={own[name]!r}; per-request `{name}` is off (start it with "
                    "`--allow_overrides`).",
                )
        batched = "pairs" in body
        pairs = body["pairs"] if batched else [body]
        if not isinstance(pairs, list) or not all(isinstance(p, dict) for p in pairs):
            raise RequestError(400, "`pairs` must be a list of objects with question, response_a, response_b.")
        q, a, b = [], [], []
        for k, p in enumerate(pairs):
            where = f"pairs[{k}]." if batched else ""
            for name, out in (("question", q), ("response_a", a), ("response_b", b)):
                if p.get(name) is None:
                    raise RequestError(400, f"Missing field `{where}{name}`.")
                try:
                    out.append(scoring.text_or_messages(p[name], where + name))
                except scoring.ItemError as e:
                    raise RequestError(400, str(e)) from None
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
        return {"results": results} if batched else results[0]

    @app.post("/reward")
    async def reward_endpoint(request: Request):
        body = await body_of(request)
        reference = body.get("reference") or config.reference
        if reference not in pairing.GROUP_REFERENCES:
            raise RequestError(400, f"`reference` must be one of {pairing.GROUP_REFERENCES}, got {reference!r}.")
        across = body.get("group_across_requests", True)
        if not isinstance(across, bool):
            raise RequestError(400, "Field `group_across_requests` must be true or false.")
        settings = settings_of(body)
        try:
            items = scoring.reward_items(body)
        except ValueError as e:
            raise RequestError(400, str(e)) from None
        health = [[] for _ in items]
        probs, failures, compared = await score(items, reference, across, settings=settings, health=health)
        rewards = [pairing.transform(p, config.output) for p in probs]
        return {
            "rewards": rewards,
            "failures": failures,
            "compared": compared,
            "swap_agreement": [sum(h) / len(h) if h else None for h in health],
            "stats": {
                "unscored": sum(r is None for r in rewards),
                "nothing_to_compare": sum(bool(f) and f.startswith(NOTHING_TO_COMPARE) for f in failures),
            },
        }

    @app.post("/get_reward")
    async def openrlhf_endpoint(request: Request):
        body = await body_of(request)
        try:
            items = scoring.openrlhf_items(body, config.strip_tokens)
        except ValueError as e:
            raise RequestError(400, str(e)) from None
        health = [[] for _ in items]
        probs, failures, compared = await score(
            items, config.reference, fields=("prompts", "query", "labels"), health=health
        )
        fallback = pairing.neutral(config.output) if config.failure_reward is None else config.failure_reward
        rewards = [fallback if p is None else pairing.transform(p, config.output) for p in probs]
        return {
            "rewards": rewards,
            "scores": rewards,
            "failures": failures,
            "compared": compared,
            "extra_logs": openrlhf_extra_logs(probs, compared, health),
        }

    return app


def install_metrics(app, metrics, state, counters) -> None:
    """`GET /metrics` (Prometheus text, behind the key like `/stats`) and the request counter it reads."""
    from fastapi.responses import PlainTextResponse

    @app.middleware("http")
    async def count_requests(request, call_next):
        response = await call_next(request)
        route = request.scope.get("route")
        metrics.request(getattr(route, "path", "other"), response.status_code)
        return response

    @app.get("/metrics")
    async def metrics_endpoint():
        collector = state["collector"]
        engine_stats = getattr(getattr(state["judge"], "backend", None), "engine_stats", None)
        text = metrics.render(
            counters, dict(collector.stats) if collector else None, engine_stats() if callable(engine_stats) else None
        )
        return PlainTextResponse(text, media_type=CONTENT_TYPE)


def openrlhf_extra_logs(probs, compared, health) -> dict:
    """Judge health for OpenRLHF's `extra_logs` (one number per key, averaged over the request's responses; OpenRLHF
    logs each key with its rollout metrics): `swap_agreement` (its comparisons whose two orders agreed; 0 when none
    was judged in both orders), `parse_failure` (responses not scored), `compared` (comparisons per response)."""
    n = max(len(probs), 1)
    agreed = [a for per_item in health for a in per_item]
    return {
        "swap_agreement": sum(agreed) / len(agreed) if agreed else 0.0,
        "parse_failure": sum(p is None for p in probs) / n,
        "compared": sum(compared) / n,
    }


class BackgroundServer:
    """Run an app with uvicorn in a thread (tests, notebooks): ``with BackgroundServer(app) as url: ...``.

    Args:
        app: The ASGI application.
        host (`str`): A loopback address.
        port (`int`): ``0`` for a free port.
    """

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
