"""`GET /metrics`: what operators watch, in the Prometheus text exposition format (version 0.0.4).

* `trl_gram_requests_total{endpoint,status}`: HTTP requests answered;
* `trl_gram_items_total{outcome}`: responses scored (`scored`), not scored (`unscored`), refused for their content
  (`item_error`);
* `trl_gram_groups_total{closed}`: groups formed across requests by how they closed (`complete`, `short`, `alone`,
  `split`, see [`~trl_gram.serving.grouping`]), plus `trl_gram_group_members_unreadable_total`;
* `trl_gram_judge_seconds`: judge call latency (a histogram);
* `trl_gram_engine_in_flight{engine}`, `trl_gram_engine_requests_total{engine}`, `trl_gram_engine_errors_total`,
  `trl_gram_engine_retries_total`, `trl_gram_engine_resent_total`, `trl_gram_engine_up`: per engine, with the
  `openai` backend;
* `trl_gram_judge_errors_total`: judge calls that raised.

Behind the API key like every other path but `/health` and `/ready`.
"""

from __future__ import annotations

import threading

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _labels(labels: dict) -> str:
    if not labels:
        return ""
    escaped = (
        f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34)).replace(chr(10), "")}"'
        for k, v in sorted(labels.items())
    )
    return "{" + ",".join(escaped) + "}"


class ServerMetrics:
    """Counters and the judge-latency histogram of one server."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: dict[tuple, int] = {}
        self.judge_errors = 0
        self.latency_counts = [0] * len(BUCKETS)
        self.latency_sum = 0.0
        self.latency_count = 0

    def request(self, endpoint: str, status: int) -> None:
        with self._lock:
            key = (endpoint, int(status))
            self.requests[key] = self.requests.get(key, 0) + 1

    def judge_call(self, seconds: float, failed: bool = False) -> None:
        with self._lock:
            self.latency_sum += seconds
            self.latency_count += 1
            for k, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    self.latency_counts[k] += 1
            self.judge_errors += int(failed)

    def render(self, items: dict, groups: dict | None, engines: list[dict] | None) -> str:
        """The exposition text: `items` the server's item counters, `groups` the collector's stats (or `None`),
        `engines` the backend's per-engine counters (or `None`)."""
        out = []

        def family(name, kind, help_text, samples):
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                out.append(f"{name}{_labels(labels)} {float(value):g}")

        with self._lock:
            family(
                "trl_gram_requests_total",
                "counter",
                "HTTP requests answered.",
                [({"endpoint": e, "status": s}, v) for (e, s), v in sorted(self.requests.items())],
            )
            scored = items.get("items", 0) - items.get("unscored", 0)
            family(
                "trl_gram_items_total",
                "counter",
                "Responses by outcome.",
                [
                    ({"outcome": "scored"}, scored),
                    ({"outcome": "unscored"}, items.get("unscored", 0) - items.get("item_errors", 0)),
                    ({"outcome": "item_error"}, items.get("item_errors", 0)),
                ],
            )
            g = groups or {}
            family(
                "trl_gram_groups_total",
                "counter",
                "Groups formed across requests, by how they closed.",
                [({"closed": how}, g.get(how, 0)) for how in ("complete", "short", "alone", "split")],
            )
            family(
                "trl_gram_group_members_unreadable_total",
                "counter",
                "Unreadable members counted toward a group.",
                [({}, g.get("unreadable_members", 0))],
            )
            family(
                "trl_gram_groups_pending", "gauge", "Responses waiting in open groups.", [({}, g.get("pending", 0))]
            )
            family("trl_gram_judge_errors_total", "counter", "Judge calls that raised.", [({}, self.judge_errors)])
            out.append("# HELP trl_gram_judge_seconds Judge call latency.")
            out.append("# TYPE trl_gram_judge_seconds histogram")
            for bound, count in zip(BUCKETS, self.latency_counts):
                out.append(f'trl_gram_judge_seconds_bucket{{le="{bound:g}"}} {count}')
            out.append(f'trl_gram_judge_seconds_bucket{{le="+Inf"}} {self.latency_count}')
            out.append(f"trl_gram_judge_seconds_sum {self.latency_sum:g}")
            out.append(f"trl_gram_judge_seconds_count {self.latency_count}")
        for name, key, kind, help_text in (
            ("trl_gram_engine_in_flight", "in_flight", "gauge", "Requests in flight per engine."),
            ("trl_gram_engine_requests_total", "requests", "counter", "Requests sent per engine."),
            ("trl_gram_engine_errors_total", "errors", "counter", "Requests an engine failed (after retries)."),
            ("trl_gram_engine_retries_total", "retries", "counter", "Retries per engine."),
            ("trl_gram_engine_resent_total", "resent", "counter", "Requests moved from a failing engine."),
            ("trl_gram_engine_up", "up", "gauge", "Whether the engine is in use (1) or skipped after failing (0)."),
        ):
            if engines:
                family(name, kind, help_text, [({"engine": e["url"]}, float(e[key])) for e in engines])
        return "\n".join(out) + "\n"
