"""Settings of the reward server ([`ServeConfig`]); ``trl-gram serve`` reads them with TRL's ``TrlParser`` (flags or
``--config serve.yaml``) beside the judge it loads, a [`~trl_gram.judge.JudgeSpec`]."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .. import pairing

DEFAULT_STRIP_TOKENS = [
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
]


@dataclass
class ServeConfig(pairing.ComparisonConfig):
    """Settings of the reward server. It also takes the group-comparison settings of
    [`~pairing.ComparisonConfig`] (``schedule``, ``schedule_degree``, ``aggregate``, ``second_order``...), the
    server's defaults, which a ``/reward`` request may override for its own groups.

    Args:
        host (`str`): Interface to listen on (``0.0.0.0`` to accept other machines).
        port (`int`): TCP port.
        api_key_env (`str`, *optional*): Name of an environment variable holding the key clients must send (read at
            start; the key itself never goes on a command line).
        api_key (`str`, *optional*): The key itself, for programmatic use (``trl-gram serve`` refuses it).
        group_size (`int`, *optional*): Responses per prompt for clients that send one sample per request (OpenRLHF's
            ``--n_samples_per_prompt``, verl's ``rollout.n``): a group closes as soon as that many arrived. ``None``:
            groups close at ``group_timeout_s``.
        group_timeout_s (`float`): Deadline of a group formed across requests, from its latest response (capped by
            ``group_max_wait_s``); an incomplete group is judged with what arrived, with a WARNING line and a
            counter. ``0`` turns grouping across requests off.
        group_max_wait_s (`float`, *optional*): Latest a group closes after its first response (default: ``4 x
            group_timeout_s``).
        max_request_bytes (`int`): Largest request body accepted (413 above).
        body_timeout_s (`float`): Time a client has to send its whole request body; a body still incomplete then is
            answered 408 and its connection closed (a half-sent request never holds the server).
        max_pairs_per_request (`int`): Most comparisons one request may ask for (413 above).
        max_generated_tokens_per_request (`int`): Cap on the tokens one request may make the judge generate (reason
            mode: comparisons x orders x votes x ``max_new_tokens``; 413 above).
        allow_overrides (`bool`): Let ``/judge`` requests choose ``mode`` and ``swap`` (off: a value other than the
            server's is refused, so no caller can start a long generation on a direct-mode server).
        batch_window_ms (`float`): How long the batcher waits for concurrent requests to join a batch.
        max_batch_pairs (`int`): Pairs per judge call; large requests are judged a share at a time, round-robin.
        reference (`str`): How completions without a reference are compared within their prompt group: ``"group"``
            (all pairs) or ``"pivot"`` (each with the group's first).
        output (`str`): Reward scale: ``"prob"``, ``"logit"`` or ``"centered"`` (see [`~pairing.transform`]).
        failure_reward (`float`, *optional*): Reward sent to OpenRLHF for responses that could not be scored
            (``None``: neutral, 0.5 for ``prob`` and 0 otherwise). ``/reward`` returns ``null`` instead.
        strip_tokens (`list[str]`): Special-token strings removed from OpenRLHF queries and prompts before judging.
    """

    host: str = field(default="127.0.0.1", metadata={"help": "Interface (0.0.0.0 accepts other machines)."})
    port: int = field(default=8000, metadata={"help": "TCP port."})
    api_key_env: str | None = field(
        default=None, metadata={"help": "Environment variable holding the key clients must send."}
    )
    api_key: str | None = field(default=None, metadata={"help": "Programmatic use only; use api_key_env."})
    group_size: int | None = field(
        default=None,
        metadata={
            "help": "Responses per prompt of per-sample clients (OpenRLHF n_samples_per_prompt, verl rollout.n)."
        },
    )
    group_timeout_s: float = field(
        default=60.0, metadata={"help": "Deadline of a group formed across requests (0: no grouping across requests)."}
    )
    group_max_wait_s: float | None = field(
        default=None,
        metadata={"help": "Cap on a group's deadline after its first response (default: 4 x group_timeout_s)."},
    )
    max_request_bytes: int = field(default=8 * 2**20, metadata={"help": "Largest request body (413 above)."})
    body_timeout_s: float = field(
        default=30.0, metadata={"help": "Time to send a whole request body (408 and the connection closed after)."}
    )
    max_pairs_per_request: int = field(default=4096, metadata={"help": "Most comparisons per request (413 above)."})
    max_generated_tokens_per_request: int = field(
        default=2**20, metadata={"help": "Most tokens one request may make the judge generate (413 above)."}
    )
    allow_overrides: bool = field(default=False, metadata={"help": "Let /judge requests choose mode and swap."})
    batch_window_ms: float = field(default=10.0, metadata={"help": "Wait for concurrent requests to join a batch."})
    max_batch_pairs: int = field(default=512, metadata={"help": "Pairs per judge call (shared round-robin)."})
    reference: str = field(
        default="group",
        metadata={"help": "Comparison within a prompt group.", "choices": list(pairing.GROUP_REFERENCES)},
    )
    output: str = field(default="prob", metadata={"help": "Reward scale.", "choices": list(pairing.OUTPUTS)})
    failure_reward: float | None = field(
        default=None, metadata={"help": "Reward for unscorable responses on /get_reward (default: neutral)."}
    )
    strip_tokens: list[str] = field(
        default_factory=lambda: list(DEFAULT_STRIP_TOKENS),
        metadata={"help": "Special-token strings removed from OpenRLHF queries and prompts."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.reference not in pairing.GROUP_REFERENCES:
            raise ValueError(f"`reference` must be one of {pairing.GROUP_REFERENCES}, got {self.reference!r}.")
        if self.output not in pairing.OUTPUTS:
            raise ValueError(f"`output` must be one of {pairing.OUTPUTS}, got {self.output!r}.")
        for name in (
            "max_request_bytes",
            "max_pairs_per_request",
            "max_batch_pairs",
            "max_generated_tokens_per_request",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be positive, got {getattr(self, name)}.")
        if self.group_size is not None and self.group_size < 1:
            raise ValueError(f"`group_size` must be positive, got {self.group_size}.")
        if self.body_timeout_s <= 0:
            raise ValueError(f"`body_timeout_s` must be positive, got {self.body_timeout_s}.")
        if self.group_max_wait_s is not None and self.group_max_wait_s < 0:
            raise ValueError(f"`group_max_wait_s` must be >= 0, got {self.group_max_wait_s}.")
        if self.group_timeout_s < 0:
            raise ValueError(f"`group_timeout_s` must be >= 0, got {self.group_timeout_s}.")
        if self.api_key_env and self.api_key is None:
            self.api_key = os.environ.get(self.api_key_env) or None
            if self.api_key is None:
                raise ValueError(f"`api_key_env={self.api_key_env}`: that environment variable is empty or unset.")
        if self.api_key is not None and not self.api_key:
            raise ValueError("`api_key` is empty.")

    def __repr__(self):  # never print the key
        fields = {k: v for k, v in self.__dict__.items() if k != "api_key"}
        shown = ", ".join(f"{k}={v!r}" for k, v in fields.items())
        return f"ServeConfig({shown}, api_key={'***' if self.api_key else None})"
