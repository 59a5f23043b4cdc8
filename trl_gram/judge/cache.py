"""LRU cache of judge runs keyed by the exact prompt tokens (see ``GramJudgeConfig.cache_size``)."""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict


class RunCache:
    """LRU cache of judge runs keyed by a digest of the exact prompt tokens and the settings that shape a run.

    Cleared whenever the backend's weights may have changed (see
    [`~trl_gram.judge.backends.base.weights_fingerprint`]).
    """

    def __init__(self, size: int):
        self.size = size
        self._data: OrderedDict = OrderedDict()
        self._fingerprint = None
        self.hits = self.misses = 0

    def check(self, fingerprint) -> None:
        """Clear the cache when the backend's weights fingerprint changed since the last call."""
        if fingerprint != self._fingerprint:
            self._data.clear()
            self._fingerprint = fingerprint

    @staticmethod
    def _digest(key) -> tuple:
        setting, ids = key
        return setting, hashlib.blake2b(array("q", ids).tobytes(), digest_size=16).digest()

    def get(self, key):
        key = self._digest(key)
        value = self._data.get(key)
        if value is None:
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key, value) -> None:
        key = self._digest(key)
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()
