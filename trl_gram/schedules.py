"""Comparison schedules for a group of completions: which pairs a judge sees, and which member of each pair is shown
first.

A schedule is a graph on the G members of a group (nodes ``0 .. G-1``); each edge ``(a, b)`` is one comparison, with
``a`` shown first when only one order is judged.

* ``"all"``: every pair, G(G-1)/2 comparisons (today's ``reference="group"``).
* ``"sparse"``: a random regular graph of degree ``d``: the union of ``d // 2`` random Hamiltonian cycles (so it is
  always connected) plus, for odd ``d``, a random perfect matching; d G / 2 comparisons, drawn afresh for each group.
  A random regular graph has a small diameter, so every pair of members is linked by short chains of comparisons.
* ``"circular"``: the deterministic circulant graph: member ``k`` meets ``k ± 1, ..., k ± d // 2`` (and, for odd
  ``d``, ``k + G / 2``); ``d = 2`` is the circle (each completion against its two neighbours).

A degree of G - 1 or more is all pairs. Every schedule is oriented by [`orient`], so each member is shown first in
half of its comparisons (exactly, or one off when it has an odd number of them).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

SCHEDULES = ("all", "sparse", "circular")


def _check(n: int, degree: int) -> None:
    if n < 0:
        raise ValueError(f"A group has a non-negative number of members, got {n}.")
    if degree < 2:
        raise ValueError(f"`schedule_degree` must be at least 2 (a connected schedule), got {degree}.")


def all_pairs(n: int) -> list[tuple[int, int]]:
    """Every pair ``(a, b)``, ``a < b``."""
    return [(a, b) for a in range(n) for b in range(a + 1, n)]


def circular(n: int, degree: int = 2) -> list[tuple[int, int]]:
    """The circulant graph of degree ``degree`` (all pairs when ``degree >= n - 1``)."""
    _check(n, degree)
    if degree >= n - 1:
        return all_pairs(n)
    edges = {tuple(sorted((k, (k + step) % n))) for k in range(n) for step in range(1, degree // 2 + 1)}
    if degree % 2:
        edges |= {tuple(sorted((k, (k + n // 2) % n))) for k in range(n)}
    return sorted(edges)


def random_regular(n: int, degree: int, rng: random.Random, tries: int = 100) -> list[tuple[int, int]]:
    """A random connected graph with every degree ``degree`` (two members get ``degree + 1`` when ``n`` and
    ``degree`` are both odd); all pairs when ``degree >= n - 1``.

    Built from ``degree // 2`` random Hamiltonian cycles plus, for odd ``degree``, a random perfect matching, drawn
    again until no edge repeats (after ``tries`` draws the circulant graph of [`circular`] is used instead).
    """
    _check(n, degree)
    if degree >= n - 1:
        return all_pairs(n)
    for _ in range(tries):
        edges: set[tuple[int, int]] = set()
        ok = True
        parts = []
        for _ in range(degree // 2):
            cycle = list(range(n))
            rng.shuffle(cycle)
            parts += [(cycle[k], cycle[(k + 1) % n]) for k in range(n)]
        if degree % 2:
            order = list(range(n))
            rng.shuffle(order)
            parts += [(order[k], order[k + 1]) for k in range(0, n - 1, 2)]
            if n % 2:  # the member left out of the matching meets one more
                parts.append((order[-1], order[rng.randrange(n - 1)]))
        for a, b in parts:
            e = (min(a, b), max(a, b))
            if e in edges:
                ok = False
                break
            edges.add(e)
        if ok:
            return sorted(edges)
    return circular(n, degree)


def orient(n: int, edges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The same comparisons, each ``(first shown, second shown)``, so that every member is shown first in half of its
    comparisons (one off at most).

    An Euler tour orientation: members with an odd number of comparisons are joined to a virtual member, then each
    connected piece is walked along an Euler circuit (Hierholzer), every edge oriented in the direction it is walked;
    a walk enters and leaves each member equally often. Deterministic for given edges.
    """
    virtual = n
    adjacency: dict[int, list[tuple[int, int]]] = {}
    all_edges = [tuple(e) for e in edges]
    for k, (a, b) in enumerate(all_edges):
        if a == b:
            raise ValueError(f"A comparison of member {a} with itself.")
        adjacency.setdefault(a, []).append((b, k))
        adjacency.setdefault(b, []).append((a, k))
    extra = []
    for node in sorted(adjacency):
        if len(adjacency[node]) % 2:
            extra.append((node, virtual))
    for a, b in extra:
        k = len(all_edges)
        all_edges.append((a, b))
        adjacency[a].append((b, k))
        adjacency.setdefault(b, []).append((a, k))
    used = [False] * len(all_edges)
    walked: list[tuple[int, int] | None] = [None] * len(all_edges)
    pointer = {node: 0 for node in adjacency}
    for start in sorted(adjacency):
        stack = [start]
        while stack:  # Hierholzer: follow unused edges, orienting each as it is walked
            node = stack[-1]
            nbrs = adjacency[node]
            while pointer[node] < len(nbrs) and used[nbrs[pointer[node]][1]]:
                pointer[node] += 1
            if pointer[node] == len(nbrs):
                stack.pop()
                continue
            other, k = nbrs[pointer[node]]
            used[k] = True
            walked[k] = (node, other)
            stack.append(other)
    return [walked[k] for k in range(len(edges))]


def schedule(n: int, kind: str = "all", degree: int = 4, rng: random.Random | None = None) -> list[tuple[int, int]]:
    """The comparisons ``(first shown, second shown)`` of a group of ``n`` members, balanced by [`orient`].

    Args:
        n (`int`): Members of the group.
        kind (`str`): ``"all"``, ``"sparse"`` or ``"circular"`` (see the module docstring).
        degree (`int`): Comparisons per member of a sparse or circular schedule.
        rng (`random.Random`, *optional*): Draws the sparse graphs (default: a fresh ``Random(0)``).
    """
    if kind not in SCHEDULES:
        raise ValueError(f"`schedule` must be one of {SCHEDULES}, got {kind!r}.")
    if kind == "all":
        edges = all_pairs(n)
    elif kind == "circular":
        edges = circular(n, degree)
    else:
        edges = random_regular(n, degree, rng if rng is not None else random.Random(0))
    return orient(n, edges)


def cost(n: int, kind: str = "all", degree: int = 4) -> int:
    """Most comparisons a group of ``n`` takes under a schedule (without drawing it): what a client budgets for."""
    if kind not in SCHEDULES:
        raise ValueError(f"`schedule` must be one of {SCHEDULES}, got {kind!r}.")
    if n < 2:
        return 0
    if kind == "all" or degree >= n - 1:
        return n * (n - 1) // 2
    circulant = len(circular(n, degree))  # also the fallback of a sparse draw
    return circulant if kind == "circular" else max(circulant, (n * degree + 1) // 2)


def is_connected(n: int, edges: Sequence[tuple[int, int]]) -> bool:
    """Whether the comparisons link every member to every other (through chains of comparisons)."""
    if n <= 1:
        return True
    seen, todo = {0}, [0]
    nbrs: dict[int, list[int]] = {}
    for a, b in edges:
        nbrs.setdefault(a, []).append(b)
        nbrs.setdefault(b, []).append(a)
    while todo:
        for m in nbrs.get(todo.pop(), []):
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return len(seen) == n
