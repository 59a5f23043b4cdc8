"""The prefix-sharing engine behind [`~trl_gram.judge.backends.prefix.PrefixBackend`]: shared-prefix reuse, in-place
KV buffers, a lean decoding loop.

Same results as the plain path (``generate`` / padded forwards) up to float rounding, with less work:

* **Prefix tree** (`prefix_tree`): the template head common to every prompt is encoded once and
  attended to by every row without copies (`prefix_attention`); below it, segments shared by several
  prompts (a GRPO group's question, a response shown first in several pairs) are encoded once, level by level, and
  their keys/values reused by every prompt under them, in both orders. Cost grows with the responses, not with
  G × (template + question).
* **Decoding** (reason mode) continues in the same buffers right after each leaf's prefill: greedy or sampled tokens,
  stop at the answer slot (label logits read from that very step), at EOS or at ``max_new_tokens``; finished rows
  are dropped from the batch (no compute on rows that are done). Identical prompts are decoded once when greedy.
* **Forced answers** for rationales that never reached the slot extend the row's own keys/values with the forced
  suffix instead of re-encoding prompt and rationale.
* **Memory** is bounded by ``token_budget`` (rows × private tokens, the shared head excluded) per batch, and the
  tree's stored segments by wave; on a CUDA out-of-memory error a batch is split in two and retried.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from transformers.utils import logging

from .base import common_prefix_length, strip_padding
from .prefix_attention import STATE_KWARG, KVState, UnsupportedAttention, attention_configs, prefix_attention
from .prefix_tree import PrefixTree
from .slots import AT_SLOT, MERGED, SEARCHING, SlotTracker

logger = logging.get_logger(__name__)

# Generation-config fields that make ``generate`` alter the logits; the fast decoder leaves them to the plain path.
_PROCESSOR_FIELDS = {
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "sequence_bias": None,
    "min_length": 0,
    "min_new_tokens": None,
    "exponential_decay_length_penalty": None,
    "renormalize_logits": False,
}
# Fixed cost of one batched pass, in padded tokens, when choosing how to split rows into passes.
_PASS_COST = 64
_SAMPLING_FIELDS = {"min_p": None, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0}


@dataclass(eq=False)
class _Row:
    """One row of a batched pass: keys/values of its private path (parts, in order), then new tokens."""

    parts: list  # each: dict layer -> (keys, values), (kv_heads, n, head_dim)
    tokens: list[int]
    base: int  # position id of the first new token
    node: object = None
    weight: int = 1  # rows it becomes when decoding (votes), for the memory budget
    path_len: int = 0

    def __post_init__(self):
        self.path_len = sum(_part_len(p) for p in self.parts)


@dataclass(eq=False)
class _Decode:
    """Decoding state of one row."""

    items: list[int]
    base: int  # position id of the first generated token
    keep: torch.Tensor  # buffer positions of the row's prompt (path + segment)
    gen: list[int] = field(default_factory=list)
    state: int = SEARCHING
    done: bool = False
    slot_logits: torch.Tensor | None = None
    forced: tuple | None = None  # (parts, tokens, base) of the forced-answer read


def _part_len(part) -> int:
    return next(iter(part.values()))[0].shape[1] if part else 0


class PrefixEngine:
    """Shared-prefix judging engine over an (already loaded) causal LM. See the module docstring."""

    def __init__(self, model, tokenizer, config, pad_id: int):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.pad_id = pad_id
        self._supported: bool | None = None
        self._configs = attention_configs(model)
        self.stats = dict.fromkeys(
            (
                "prompt_tokens",
                "computed_tokens",
                "padded_tokens",
                "generated_tokens",
                "batches",
                "oom_splits",
                "decode_steps",
                "decode_rows",
            ),
            0,
        )
        self.stats.update(prefill_seconds=0.0, decode_seconds=0.0)

    @property
    def device(self):
        return next(self.model.parameters()).device

    # ---------------------------------------------------------------------------------------------------------------
    # Support checks
    # ---------------------------------------------------------------------------------------------------------------
    def supports(self, generate: bool = False, sample: bool = False) -> bool:
        """Whether the fast path reproduces the plain one for this model (checked once on a tiny probe) and, when
        generating, whether the model's generation config adds logits processors the fast decoder does not apply."""
        if self._supported is None:
            self._supported = self._probe()
        if not self._supported:
            return False
        if generate:
            gen_cfg = getattr(self.model, "generation_config", None)
            fields = dict(_PROCESSOR_FIELDS, **(_SAMPLING_FIELDS if sample else {}))
            for name, default in fields.items():
                value = getattr(gen_cfg, name, default) if gen_cfg is not None else default
                if value not in (default, None) and not (isinstance(value, (list, dict)) and not value):
                    logger.info(f"Generation config sets `{name}`={value!r}: reason mode uses the plain engine.")
                    return False
        return True

    @torch.no_grad()
    def _probe(self) -> bool:
        """Compare fast and plain last-position logits on two short prompts sharing a head."""
        vocab = self.model.get_input_embeddings().num_embeddings
        gen = torch.Generator().manual_seed(0)
        head = torch.randint(3, vocab, (20,), generator=gen).tolist()
        seqs = [head + torch.randint(3, vocab, (n,), generator=gen).tolist() for n in (5, 9)]
        try:
            fast = self.last_logits(seqs, None, min_shared=8, checked=True)
            plain = []
            for s in seqs:
                plain.append(self.model(input_ids=torch.tensor([s], device=self.device)).logits[0, -1].float().cpu())
        except (UnsupportedAttention, TypeError, ValueError, NotImplementedError, RuntimeError) as e:
            logger.warning(f"The fast judge engine does not support this model ({e}); using the plain engine.")
            return False
        tol = 1e-3 if next(self.model.parameters()).dtype == torch.float32 else 5e-2
        for f, p in zip(fast, plain):
            scale = max(1.0, float(p.abs().max()))
            if not torch.isfinite(f).all() or float((f - p).abs().max()) > tol * scale:
                logger.warning("The fast judge engine disagrees with the model's own forward; using the plain engine.")
                return False
        return True

    # ---------------------------------------------------------------------------------------------------------------
    # Batched passes
    # ---------------------------------------------------------------------------------------------------------------
    def _forward(self, rows: list[_Row], shared, extra: int = 0):
        """Run ``rows`` (private path + new tokens, left-padded) in one pass. Returns the state (positions ``P - p``
        to ``P`` hold a row's path, ``P + S - s`` to ``P + S`` its new tokens), the last-position logits, P and S."""
        device = self.device
        P = max(r.path_len for r in rows)
        S = max(len(r.tokens) for r in rows)
        state = KVState(len(rows), P + S + extra, device, shared=shared)
        ids = torch.full((len(rows), S), self.pad_id, dtype=torch.long)
        pos = torch.zeros((len(rows), S), dtype=torch.long)
        for i, row in enumerate(rows):
            at = P - row.path_len
            for part in row.parts:
                for layer, (k, v) in part.items():
                    state.write(layer, i, at, k, v)
                at += _part_len(part)
            n = len(row.tokens)
            ids[i, S - n :] = torch.as_tensor(row.tokens)
            pos[i, S - n :] = torch.arange(row.base, row.base + n)
            state.valid[i, P - row.path_len : P] = True
            state.valid[i, P + S - n : P + S] = True
        state.length = P
        started = time.perf_counter()
        logits = self._step(state, ids.to(device), pos.to(device))
        self.stats["prefill_seconds"] += time.perf_counter() - started
        self.stats["computed_tokens"] += sum(len(r.tokens) for r in rows)
        self.stats["padded_tokens"] += len(rows) * S
        self.stats["batches"] += 1
        return state, logits, P, S

    def _step(self, state: KVState, ids, pos):
        state.begin(ids.shape[1])
        out = self.model(input_ids=ids, position_ids=pos, use_cache=False, logits_to_keep=1, **{STATE_KWARG: state})
        state.finish(ids.shape[1])
        return out.logits[:, -1].float()

    @staticmethod
    def _segment_kv(state: KVState, row: int, positions) -> dict:
        return {layer: state.read(layer, row, positions) for layer in sorted(state.keys)}

    def _chunks(self, rows: list[_Row], extra: int = 0) -> list[list[_Row]]:
        """Split rows into passes with ``rows × (max path + max new tokens + extra) ≤ token_budget`` (and at most
        ``max_batch_rows``), choosing the cuts that minimize padded new tokens plus a fixed cost per pass (dynamic
        programming over rows sorted by length: padding in the new tokens runs through every layer, padding in the
        paths only masks keys)."""
        budget, max_rows = self.config.token_budget, self.config.max_batch_rows
        rows = sorted(rows, key=lambda r: (-len(r.tokens), -r.path_len))
        n = len(rows)
        best, cut = [0.0] * (n + 1), [n] * (n + 1)
        for i in range(n - 1, -1, -1):
            width, path, weight = len(rows[i].tokens), 0, 0
            best[i] = math.inf
            for j in range(i, n):
                path, weight = max(path, rows[j].path_len), weight + rows[j].weight
                if j > i and (weight * (path + width + extra) > budget or (max_rows and weight > max_rows)):
                    break
                cost = (j - i + 1) * width + _PASS_COST + best[j + 1]
                if cost < best[i]:
                    best[i], cut[i] = cost, j + 1
        chunks, i = [], 0
        while i < n:
            chunks.append(rows[i : cut[i]])
            i = cut[i]
        if extra and len(chunks) > 1:  # decoding batches: the same number of passes, evenly filled
            k = len(chunks)
            even = [rows[n * c // k : n * (c + 1) // k] for c in range(k)]
            if all(self._fits(c, extra) for c in even):
                chunks = even
        return chunks

    def _fits(self, rows: list[_Row], extra: int) -> bool:
        width = max(r.path_len for r in rows) + max(len(r.tokens) for r in rows) + extra
        weight = sum(r.weight for r in rows)
        max_rows = self.config.max_batch_rows
        return len(rows) == 1 or (weight * width <= self.config.token_budget and not (max_rows and weight > max_rows))

    def _run_chunks(self, rows, extra, fn, progress=None):
        """``fn(chunk)`` over budgeted chunks; on CUDA out-of-memory a chunk is split in halves and retried."""
        todo = self._chunks(rows, extra)
        while todo:
            chunk = todo.pop(0)
            try:
                fn(chunk)
            except torch.OutOfMemoryError:
                if len(chunk) == 1:
                    raise
                self.stats["oom_splits"] += 1
                logger.warning(f"Out of memory on a judge batch of {len(chunk)} rows: splitting it and retrying.")
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                half = len(chunk) // 2
                todo[:0] = [chunk[:half], chunk[half:]]
                continue
            if progress is not None:
                progress.update(sum(len(getattr(r.node, "items", ())) or 1 for r in chunk))

    def _shared_head(self, tree: PrefixTree):
        if tree.shared_length == 0:
            return None
        row = _Row([], tree.unique[tree.root.seq][: tree.shared_length], 0)
        state, _, _, _ = self._forward([row], None)
        return self._segment_kv(state, 0, torch.arange(tree.shared_length, device=self.device)) or None

    def _tree_rows(self, tree: PrefixTree, nodes) -> list[_Row]:
        return [_Row([a.kv for a in n.ancestors()], tree.tokens(n), n.start, node=n) for n in nodes]

    def _walk(self, tree: PrefixTree, shared, on_leaves, progress=None, decode_extra: int | None = None, votes=False):
        """Encode internal nodes level by level, storing their keys/values, then hand the leaves to ``on_leaves``.

        Direct mode (``decode_extra=None``): leaf chunks are whole segments. Reason mode: each leaf's segment but its
        last token is encoded and stored first (passes sized for minimal padding), then decoding batches (sized by
        ``token_budget`` with ``decode_extra`` tokens of room per row) start from that last token. Top-level subtrees
        are processed in waves, and leaves in groups, so stored segments stay within about ``token_budget`` tokens.
        """
        budget = self.config.token_budget
        waves, cur, size = [], [], 0
        for sub in tree.subtrees():
            inner = sum(n.length for n in sub if n.children)
            if cur and size + inner > budget:
                waves.append(cur)
                cur, size = [], 0
            cur.append(sub)
            size += inner
        if cur:
            waves.append(cur)
        for wave in waves:
            nodes = [n for sub in wave for n in sub]
            for depth in sorted({n.depth for n in nodes}):
                inner = [n for n in nodes if n.depth == depth and n.children]
                if inner:
                    self._run_chunks(self._tree_rows(tree, inner), 0, lambda c: self._store(c, shared))
            leaves = [n for n in nodes if not n.children]
            if decode_extra is None:
                self._run_chunks(self._tree_rows(tree, leaves), 0, lambda c: on_leaves(c, shared), progress)
            else:
                group, size = [], 0
                for leaf in leaves + [None]:
                    if leaf is not None and (not group or size + leaf.length <= budget):
                        group.append(leaf)
                        size += leaf.length
                        continue
                    self._decode_leaves(tree, group, shared, on_leaves, decode_extra, votes, progress)
                    group, size = ([leaf], leaf.length) if leaf is not None else ([], 0)
            for n in nodes:  # free this wave's stored segments
                n.kv = None

    def _decode_leaves(self, tree, leaves, shared, on_leaves, extra, votes, progress):
        bodies = [n for n in leaves if n.length > 1]
        if bodies:
            rows = [_Row([a.kv for a in n.ancestors()], tree.tokens(n)[:-1], n.start, node=n) for n in bodies]
            self._run_chunks(rows, 0, lambda c: self._store(c, shared))
        rows = []
        for n in leaves:
            parts = [a.kv for a in n.ancestors()] + ([n.kv] if n.length > 1 else [])
            weight = max(1, len(n.items)) if votes else 1
            rows.append(_Row(parts, tree.tokens(n)[-1:], n.end - 1, node=n, weight=weight))
        self._run_chunks(rows, extra, lambda c: on_leaves(c, shared), progress)
        for n in leaves:
            n.kv = None

    def _store(self, chunk: list[_Row], shared) -> None:
        state, _, P, S = self._forward(chunk, shared)
        for i, row in enumerate(chunk):
            n = len(row.tokens)
            row.node.kv = self._segment_kv(state, i, torch.arange(P + S - n, P + S, device=self.device))

    def _tree(self, sequences, min_shared: int = 16) -> PrefixTree:
        tree = PrefixTree(sequences, min_shared=min_shared)
        self.stats["prompt_tokens"] += sum(len(s) for s in sequences)
        return tree

    # ---------------------------------------------------------------------------------------------------------------
    # Direct mode: last-position logits
    # ---------------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def last_logits(self, sequences, label_ids, progress=None, min_shared: int = 16, checked=False):
        """Logits (of ``label_ids``, or all when ``None``) at the last position of every sequence."""
        if not checked and not self.supports():
            raise RuntimeError("The fast judge engine does not support this model.")
        with prefix_attention(self.model, self._configs):
            return self._last_logits(sequences, label_ids, progress, min_shared)

    def _last_logits(self, sequences, label_ids, progress, min_shared):
        tree = self._tree(sequences, min_shared)
        ids = torch.as_tensor(label_ids, device=self.device) if label_ids is not None else None
        out: list[torch.Tensor | None] = [None] * len(sequences)

        def on_leaves(chunk, shared):
            _, logits, _, _ = self._forward(chunk, shared)
            picked = (logits.index_select(-1, ids) if ids is not None else logits).cpu()
            for i, row in enumerate(chunk):
                for item in row.node.items:
                    out[item] = picked[i]

        self._walk(tree, self._shared_head(tree), on_leaves, progress)
        return out

    def extend_logits(self, rows: list[_Row], label_ids, shared) -> list[torch.Tensor]:
        """Label logits after appending ``row.tokens`` to each row's stored keys/values."""
        ids = torch.as_tensor(label_ids, device=self.device)
        out = {}

        def run(chunk):
            _, logits, _, _ = self._forward(chunk, shared)
            for i, row in enumerate(chunk):
                out[id(row)] = logits[i].index_select(-1, ids).cpu()

        self._run_chunks(rows, 0, run)
        return [out[id(r)] for r in rows]

    # ---------------------------------------------------------------------------------------------------------------
    # Reason mode: decode from each leaf
    # ---------------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, sequences, label_ids, *, answer_open, sample, seed, forced_tokens, progress=None):
        """Generate a rationale after each sequence, stopping at the answer slot.

        Args:
            forced_tokens: ``f(generated_ids) -> ids | None``: the tokens of the forced continuation (the rationale
                re-encoded, cut at the answer tag or followed by the forced answer prefix) for rows that never
                reached the slot, or ``None`` to skip the forced read.

        Returns one ``(generated_ids, state, slot_logits)`` per sequence; ``slot_logits`` are the label logits at the
        slot (read while generating, or by the forced read), or ``None``.
        """
        if not self.supports(generate=True, sample=sample):
            raise RuntimeError("The fast judge engine does not support this model or generation config.")
        with prefix_attention(self.model, self._configs):
            return self._generate(sequences, label_ids, answer_open, sample, seed, forced_tokens, progress)

    def _generate(self, sequences, label_ids, answer_open, sample, seed, forced_tokens, progress):
        cfg = self.config
        tree = self._tree(sequences)
        label_ids_t = torch.as_tensor(label_ids, device=self.device)
        tracker = SlotTracker(self.tokenizer, answer_open)
        gen_cfg = getattr(self.model, "generation_config", None)
        eos = getattr(gen_cfg, "eos_token_id", None)
        if eos is None:
            eos = self.tokenizer.eos_token_id
        eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
        generator = torch.Generator(device=self.device).manual_seed(seed) if sample else None
        results: list = [None] * len(sequences)
        shared = self._shared_head(tree)

        def on_leaves(chunk, shared):
            rows = self._decode_chunk(chunk, shared, label_ids_t, tracker, eos_ids, sample, generator, forced_tokens)
            forced = [r for r in rows if r.forced is not None]
            if forced:
                reads = [_Row(*r.forced) for r in forced]
                for r, logits in zip(forced, self.extend_logits(reads, label_ids, shared)):
                    r.slot_logits = logits
            for r in rows:
                for item in r.items:
                    results[item] = (r.gen, r.state, r.slot_logits)

        self._walk(tree, shared, on_leaves, progress, decode_extra=cfg.max_new_tokens, votes=sample)
        return results

    def _choose(self, logits, sample, generator):
        if not sample:
            return logits.argmax(-1)
        scores = logits / self.config.temperature
        top_p = self.config.top_p
        if top_p is not None and top_p < 1.0:
            sorted_scores, order = torch.sort(scores, descending=False)
            cumulative = sorted_scores.softmax(-1).cumsum(-1)
            remove = cumulative <= (1 - top_p)
            remove[..., -1] = False
            scores = scores.masked_fill(remove.scatter(-1, order, remove), -math.inf)
        return torch.multinomial(torch.softmax(scores, -1), 1, generator=generator).squeeze(-1)

    def _decode_chunk(self, chunk, shared, label_ids, tracker, eos_ids, sample, generator, forced_tokens):
        cfg = self.config
        device = self.device
        state, logits, P, S = self._forward(chunk, shared, extra=min(cfg.max_new_tokens, 64))
        # One decoding row per leaf when greedy (identical prompts decode identically), one per item when sampling.
        rows, select = [], []
        for i, r in enumerate(chunk):
            n = len(r.tokens)
            keep = torch.cat([torch.arange(P - r.path_len, P), torch.arange(P + S - n, P + S)]).to(device)
            for items in [[it] for it in r.node.items] if sample else [list(r.node.items)]:
                rows.append(_Decode(items, r.base + n, keep))
                select.append(i)
        if select != list(range(len(chunk))):
            state.select(torch.as_tensor(select))
            logits = logits.index_select(0, torch.as_tensor(select, device=logits.device))
        finished: list[_Decode] = []
        for step in range(cfg.max_new_tokens):
            tokens = self._choose(logits, sample, generator).tolist()
            live = [i for i, r in enumerate(rows) if not r.done]
            for i in live:
                rows[i].gen.append(tokens[i])
            self.stats["generated_tokens"] += len(live)
            new_states = tracker.update([rows[i].state for i in live], [rows[i].gen for i in live])
            for i, s in zip(live, new_states):
                r = rows[i]
                r.state = s
                if s == AT_SLOT:
                    r.slot_logits = logits[i].index_select(-1, label_ids).cpu()
                    r.done = True
                elif s == MERGED or tokens[i] in eos_ids or step == cfg.max_new_tokens - 1:
                    r.done = True
                    stripped = strip_padding(r.gen, self.pad_id, eos_ids)
                    self._prepare_forced(r, state, i, step, forced_tokens(stripped))
                    r.gen = stripped
            live = [i for i, r in enumerate(rows) if not r.done]
            if not live:
                break
            if len(live) <= 0.75 * len(rows):  # drop finished rows (copies the buffers, so not at every step)
                finished += [r for r in rows if r.done]
                keep_rows = torch.as_tensor(live)
                state.select(keep_rows)
                logits = logits.index_select(0, keep_rows.to(logits.device))
                tokens = [tokens[i] for i in live]
                rows = [rows[i] for i in live]
            T = state.length
            if T + 1 > state.capacity:
                state.grow(min(T + 1 + max(64, T // 2), P + S + cfg.max_new_tokens))
            state.valid[:, T] = True
            ids = torch.as_tensor(tokens, device=device).view(-1, 1)
            pos = torch.as_tensor([r.base + len(r.gen) - 1 for r in rows], device=device).view(-1, 1)
            started = time.perf_counter()
            logits = self._step(state, ids, pos)
            self.stats["decode_seconds"] += time.perf_counter() - started
            self.stats["decode_steps"] += 1
            self.stats["decode_rows"] += len(rows)
        return finished + rows

    def _prepare_forced(self, r: _Decode, state: KVState, i: int, step: int, tokens) -> None:
        """Keep what the forced-answer read of a row finished at ``step`` needs: its keys/values up to where the forced
        sequence ``tokens`` departs from the generated ones (the first ``step`` of which are in the buffer), and the
        tokens after that."""
        if tokens is None:
            return
        k = min(common_prefix_length(r.gen[:step], tokens), len(tokens) - 1)
        last = int(r.keep[-1])
        positions = torch.cat([r.keep, torch.arange(last + 1, last + 1 + k, device=r.keep.device)])
        r.forced = ([self._segment_kv(state, i, positions)], tokens[k:], r.base + k)
