"""Token-level prefix tree of judge prompts: which prompt segments are shared, so each is encoded once.

A batch of judge prompts repeats a lot: every prompt starts with the same template head (chat template, instructions),
the prompts of one GRPO group share the question, and with all-pairs comparison each response appears as "response A"
in several prompts. [`PrefixTree`] takes the exact token ids of the prompts (as the plain engine would feed
them, so tokenization is never changed) and builds a compressed trie over them:

* the **shared head**: the longest token prefix common to *every* prompt (kept only when at least ``min_shared``
  tokens); its keys/values are computed once and attended to by every row without being copied;
* below it, **nodes**: each a token segment ``[start, end)`` of its prompts, whose parent ends where it starts. A node
  with several children is computed once and its keys/values are reused by all of them; a leaf ends one prompt.

Nodes whose sharing saves fewer than ``min_saving`` tokens are merged into their children (fewer, larger batched
passes), every prompt ends at a leaf of at least one token (so each row has a position to read logits from), and
identical prompts share one leaf.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .base import common_prefix_length


@dataclass(eq=False)
class Node:
    """A segment ``tokens[start:end]`` of the prompts below it (absolute token offsets)."""

    start: int
    end: int
    seq: int  # index of one unique prompt through this node (its tokens spell the segment)
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)
    depth: int = 0
    items: list[int] = field(default_factory=list)  # input indices of the prompts ending here (leaves only)
    kv: dict | None = None  # scratch for the engine: this segment's keys/values once computed

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def is_leaf(self) -> bool:
        return not self.children

    def ancestors(self) -> list[Node]:
        """The nodes above this one, below the root, top first."""
        chain, node = [], self.parent
        while node is not None and node.parent is not None:
            chain.append(node)
            node = node.parent
        return chain[::-1]


class PrefixTree:
    """Compressed trie over token sequences.

    Args:
        sequences: Token id lists (the prompts). Duplicates are allowed and share one leaf.
        min_shared: Smallest shared head worth keeping (else there is no shared head: ``shared_length == 0``).
        min_saving: A node is kept only if sharing it saves at least this many tokens (``length × (children - 1)``).

    Attributes:
        unique: The distinct sequences; ``item_to_unique[i]`` maps input ``i`` to its index there.
        root: The shared head ``[0, shared_length)`` (possibly empty); its children hold the rest.
        leaves: ``leaves[u]`` is the leaf ending unique sequence ``u``.
        levels: Non-root nodes grouped by depth (level 1 first): every node's parent is on an earlier level.
    """

    def __init__(self, sequences: Sequence[Sequence[int]], min_shared: int = 16, min_saving: int = 32):
        if not sequences:
            raise ValueError("`sequences` is empty: nothing to build a prefix tree from.")
        if any(len(s) == 0 for s in sequences):
            raise ValueError("Every sequence needs at least one token.")
        index: dict[tuple[int, ...], int] = {}
        self.unique: list[list[int]] = []
        self.item_to_unique: list[int] = []
        for s in sequences:
            key = tuple(s)
            if key not in index:
                index[key] = len(self.unique)
                self.unique.append(list(s))
            self.item_to_unique.append(index[key])
        order = sorted(range(len(self.unique)), key=lambda u: self.unique[u])
        seqs = self.unique
        # Split points between neighbours in sorted order, capped so that every sequence keeps a token of its own.
        lcps = [0] + [
            min(common_prefix_length(seqs[a], seqs[b]), len(seqs[a]) - 1, len(seqs[b]) - 1)
            for a, b in zip(order, order[1:])
        ]
        if len(order) == 1:
            common = len(seqs[order[0]]) - 1
        else:
            common = min(lcps[1:])
        self.shared_length = common if common >= min_shared else 0
        self.root = Node(0, self.shared_length, order[0])
        self.leaves: list[Node] = [None] * len(seqs)  # type: ignore[list-item]
        stack = [self.root]
        for rank, u in enumerate(order):
            depth = max(lcps[rank], self.shared_length) if rank else self.shared_length
            last = None
            while stack[-1].end > depth:
                last = stack.pop()
            if stack[-1].end < depth:  # split `last`: a new internal node ends at `depth`
                parent = stack[-1]
                mid = Node(parent.end, depth, last.seq, parent=parent, children=[last])
                parent.children[parent.children.index(last)] = mid
                last.parent, last.start = mid, depth
                stack.append(mid)
            leaf = Node(stack[-1].end, len(seqs[u]), u, parent=stack[-1])
            stack[-1].children.append(leaf)
            stack.append(leaf)
            self.leaves[u] = leaf
        for item, u in enumerate(self.item_to_unique):
            self.leaves[u].items.append(item)
        self._collapse(min_saving)
        self.levels: list[list[Node]] = []
        frontier = list(self.root.children)
        depth = 1
        while frontier:
            for node in frontier:
                node.depth = depth
            self.levels.append(frontier)
            frontier = [c for node in frontier for c in node.children]
            depth += 1

    def _collapse(self, min_saving: int) -> None:
        """Merge, top-down, internal nodes that save too few tokens into their children."""
        todo = list(self.root.children)
        while todo:
            node = todo.pop()
            if node.children and node.length * (len(node.children) - 1) < min_saving:
                parent = node.parent
                at = parent.children.index(node)
                for child in node.children:
                    child.start, child.parent = node.start, parent
                parent.children[at : at + 1] = node.children
                todo.extend(node.children)
            else:
                todo.extend(node.children)

    def tokens(self, node: Node) -> list[int]:
        return self.unique[node.seq][node.start : node.end]

    @property
    def nodes(self) -> list[Node]:
        return [n for level in self.levels for n in level]

    def computed_tokens(self) -> int:
        """Tokens actually run through the model: the shared head plus every node once."""
        return self.shared_length + sum(n.length for n in self.nodes)

    def subtrees(self) -> list[list[Node]]:
        """The nodes of each top-level subtree (children of the root), in level order: independent units of work."""
        out = []
        for top in self.root.children:
            nodes, frontier = [], [top]
            while frontier:
                nodes.extend(frontier)
                frontier = [c for n in frontier for c in n.children]
            out.append(nodes)
        return out
