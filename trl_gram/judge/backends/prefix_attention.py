"""Attention over a shared prefix plus per-row key/value buffers, plugged into transformers' attention interface.

The fast judge engine calls the model's own ``forward`` (embeddings, RoPE, norms, MLPs, LoRA layers all stay
transformers'), but with ``use_cache=False`` and a [`KVState`] passed through the forward keyword arguments. The
attention function registered here as ``"trl_gram_prefix"``:

* writes the new keys/values of each layer into the state's preallocated per-row buffers (no ``torch.cat`` of the
  whole cache at every decoding step, which dominated decoding time with ``DynamicCache`` on CPU);
* attends to the **shared head** (keys/values computed once for all rows and stored once) and to the row's own
  buffer, with one exact softmax over both: when decoding (one new token per row), a single matrix product per layer
  serves every row for the shared head, so its keys/values are read once per step, not once per row; when
  prefilling, the shared head is copied per row and PyTorch's blocked SDPA kernel computes the attention;
* masks per key (``valid``) and causally inside the buffer, so rows can hold left-padded paths and segments with
  holes, and every query always sees at least itself (no all-masked row, hence no NaN from padding).

The result equals ordinary causal attention over the concatenated sequence up to float rounding. Models whose
attention needs more (sliding windows, soft-capping, attention sinks) raise, and the engine falls back to the plain
path.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

ATTENTION_NAME = "trl_gram_prefix"
STATE_KWARG = "trl_gram_kv"
# Largest score block materialized at once (elements); longer query blocks are split.
_MAX_SCORE_ELEMENTS = 1 << 25


class UnsupportedAttention(RuntimeError):
    """The model asks its attention for something the prefix engine does not implement."""


class KVState:
    """Per-row key/value buffers of one batch, plus the shared head, for the ``trl_gram_prefix`` attention.

    Buffers are allocated per layer on first use (``(rows, kv_heads, capacity, head_dim)``) and written in place.
    ``length`` is the number of buffer positions filled before the current forward; the engine sets ``valid`` (keys
    that exist) before each forward and advances ``length`` after it.
    """

    def __init__(self, rows: int, capacity: int, device, shared: dict | None = None):
        self.rows = rows
        self.capacity = capacity
        self.device = device
        self.shared = shared or {}  # layer -> (keys, values), each (kv_heads, shared_len, head_dim)
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}
        self.valid = torch.zeros(rows, capacity, dtype=torch.bool, device=device)
        self.length = 0
        self._allowed = None  # (rows, q_len, length + q_len) mask of the current forward
        self._sdpa_mask = None  # the same with the shared head in front (built once per forward)

    # -- buffer management ------------------------------------------------------------------------------------------
    def ensure_layer(self, layer: int, like: torch.Tensor) -> None:
        """Allocate the buffers of ``layer`` shaped after ``like`` (``(..., kv_heads, n, head_dim)``)."""
        if layer not in self.keys:
            shape = (self.rows, like.shape[-3], self.capacity, like.shape[-1])
            self.keys[layer] = torch.zeros(shape, dtype=like.dtype, device=self.device)
            self.values[layer] = torch.zeros(shape, dtype=like.dtype, device=self.device)

    def write(self, layer: int, row: int, start: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Copy ``(kv_heads, n, head_dim)`` keys/values of one row into positions ``start:start+n``."""
        self.ensure_layer(layer, keys)
        n = keys.shape[-2]
        self.keys[layer][row, :, start : start + n] = keys
        self.values[layer][row, :, start : start + n] = values

    def read(self, layer: int, row: int, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys/values of one row at the given buffer positions (a copy)."""
        return (
            self.keys[layer][row].index_select(1, positions),
            self.values[layer][row].index_select(1, positions),
        )

    def grow(self, capacity: int) -> None:
        if capacity <= self.capacity:
            return
        for store in (self.keys, self.values):
            for layer, buf in store.items():
                new = torch.zeros(buf.shape[:2] + (capacity,) + buf.shape[3:], dtype=buf.dtype, device=buf.device)
                new[:, :, : self.capacity] = buf
                store[layer] = new
        valid = torch.zeros(self.rows, capacity, dtype=torch.bool, device=self.device)
        valid[:, : self.capacity] = self.valid
        self.valid, self.capacity = valid, capacity

    def select(self, rows: torch.Tensor) -> None:
        """Keep (or repeat) the given rows, in that order."""
        rows = rows.to(self.device)
        for store in (self.keys, self.values):
            for layer in store:
                store[layer] = store[layer].index_select(0, rows)
        self.valid = self.valid.index_select(0, rows)
        self.rows = len(rows)

    # -- per forward --------------------------------------------------------------------------------------------------
    def begin(self, q_len: int) -> None:
        """Prepare the mask of a forward over ``q_len`` new positions per row (after ``valid`` is set)."""
        end = self.length + q_len
        if end > self.capacity:
            raise ValueError(f"KVState overflow: {end} positions for a capacity of {self.capacity}.")
        keys = torch.arange(end, device=self.device)
        queries = torch.arange(self.length, end, device=self.device)
        causal = keys[None, :] <= queries[:, None]
        self._allowed = (self.valid[:, None, :end] & causal[None]) | (keys[None, :] == queries[:, None])[None]

    def finish(self, q_len: int) -> None:
        self.length += q_len
        self._allowed = self._sdpa_mask = None

    def attend(self, layer: int, query, key, value, scaling: float) -> torch.Tensor:
        rows, q_heads, q_len, dim = query.shape
        kv_heads = key.shape[1]
        groups = q_heads // kv_heads
        start, end = self.length, self.length + q_len
        self.ensure_layer(layer, key)
        self.keys[layer][:, :, start:end] = key
        self.values[layer][:, :, start:end] = value
        keys, values = self.keys[layer][:, :, :end], self.values[layer][:, :, :end]
        shared = self.shared.get(layer)
        if q_len > 1:  # prefill: the shared head is copied per row and SDPA's blocked kernel does the rest
            return self._attend_sdpa(query, keys, values, shared, scaling)
        # Heads are grouped per key/value head (query head h reads kv head h // groups).
        q = query.reshape(rows, kv_heads, groups, q_len, dim)
        width = end + (shared[0].shape[1] if shared is not None else 0)
        block = max(1, min(q_len, _MAX_SCORE_ELEMENTS // max(1, rows * q_heads * width)))
        outs = []
        for b0 in range(0, q_len, block):
            b1 = min(q_len, b0 + block)
            outs.append(self._attend_block(q[:, :, :, b0:b1], keys, values, shared, self._allowed[:, b0:b1], scaling))
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=3)
        return out.reshape(rows, q_heads, q_len, dim).transpose(1, 2).contiguous()

    def _attend_sdpa(self, query, keys, values, shared, scaling):
        rows, q_len = query.shape[0], query.shape[2]
        mask = self._allowed
        if shared is not None:
            s_keys, s_values = shared
            keys = torch.cat([s_keys.unsqueeze(0).expand(rows, -1, -1, -1), keys], dim=2)
            values = torch.cat([s_values.unsqueeze(0).expand(rows, -1, -1, -1), values], dim=2)
            if self._sdpa_mask is None:
                ones = torch.ones(rows, q_len, s_keys.shape[1], dtype=torch.bool, device=mask.device)
                self._sdpa_mask = torch.cat([ones, mask], dim=-1)
            mask = self._sdpa_mask
        enable_gqa = query.shape[1] != keys.shape[1]
        out = F.scaled_dot_product_attention(
            query, keys, values, attn_mask=mask[:, None], scale=scaling, enable_gqa=enable_gqa
        )
        return out.transpose(1, 2).contiguous()

    @staticmethod
    def _attend_block(q, keys, values, shared, allowed, scaling):
        rows, kv_heads, groups, n, dim = q.shape
        flat = q.reshape(rows, kv_heads, groups * n, dim)
        scores = torch.matmul(flat, keys.transpose(-1, -2)).view(rows, kv_heads, groups, n, -1)
        scores = scores.float().mul_(scaling).masked_fill_(~allowed[:, None, None], -math.inf)
        if shared is None:
            probs = torch.softmax(scores, dim=-1).to(values.dtype)
            return torch.matmul(probs.view(rows, kv_heads, groups * n, -1), values).view(
                rows, kv_heads, groups, n, dim
            )
        s_keys, s_values = shared
        s_len = s_keys.shape[1]
        # One product per kv head for all rows: (kv_heads, rows·groups·n, dim) @ (kv_heads, dim, s_len).
        by_head = flat.transpose(0, 1).reshape(kv_heads, rows * groups * n, dim)
        s_scores = torch.bmm(by_head, s_keys.transpose(1, 2)).view(kv_heads, rows, groups, n, s_len)
        s_scores = s_scores.transpose(0, 1).float().mul_(scaling)
        probs = torch.softmax(torch.cat([s_scores, scores], dim=-1), dim=-1).to(values.dtype)
        s_probs, probs = probs[..., :s_len], probs[..., s_len:]
        out = torch.matmul(probs.reshape(rows, kv_heads, groups * n, -1), values)
        s_flat = s_probs.transpose(0, 1).reshape(kv_heads, rows * groups * n, s_len)
        out = out + torch.bmm(s_flat, s_values).view(kv_heads, rows, groups * n, dim).transpose(0, 1)
        return out.view(rows, kv_heads, groups, n, dim)


def prefix_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """The ``trl_gram_prefix`` attention function (signature of transformers' attention interface)."""
    state = kwargs.get(STATE_KWARG)
    if state is None:  # not one of our forwards: behave like SDPA
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    for name in ("sliding_window", "softcap", "s_aux", "sinks"):
        if kwargs.get(name) is not None:
            raise UnsupportedAttention(f"attention with `{name}` is not supported by the prefix engine")
    if getattr(module, "layer_idx", None) is None:
        raise UnsupportedAttention("attention module without `layer_idx`")
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    return state.attend(module.layer_idx, query, key, value, scaling), None


AttentionInterface.register(ATTENTION_NAME, prefix_attention_forward)


def attention_configs(model) -> list:
    """Every distinct config (model, sub-models) that carries an attention implementation."""
    seen, out = set(), []
    for module in model.modules():
        cfg = getattr(module, "config", None)
        if cfg is not None and id(cfg) not in seen and hasattr(cfg, "_attn_implementation"):
            seen.add(id(cfg))
            out.append(cfg)
    return out


@contextlib.contextmanager
def prefix_attention(model, configs: list | None = None):
    """Route the model's attention through ``trl_gram_prefix`` for the duration of the block (restored after)."""
    configs = attention_configs(model) if configs is None else configs
    saved = [cfg._attn_implementation for cfg in configs]
    try:
        for cfg in configs:
            cfg._attn_implementation = ATTENTION_NAME
        yield
    finally:
        for cfg, name in zip(configs, saved):
            cfg._attn_implementation = name
