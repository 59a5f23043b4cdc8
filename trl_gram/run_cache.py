"""LRU cache of judge runs keyed by the exact prompt tokens (see ``GramJudgeConfig.cache_size``)."""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict


class RunCache:
    """LRU cache of judge runs keyed by a digest of the exact prompt tokens and the settings that shape a run.

    Cleared whenever the model's weights may have changed (any in-place update of a parameter bumps its version
    counter, as optimizer steps and ``load_state_dict`` do) or the active adapter changes.
    """

    def __init__(self, size: int):
        self.size = size
        self._data: OrderedDict = OrderedDict()
        self._fingerprint = None
        self.hits = self.misses = 0

    def check_model(self, model) -> None:
        parameters = model.parameters() if callable(getattr(model, "parameters", None)) else ()
        fingerprint = (id(model), sum(p._version for p in parameters), str(getattr(model, "active_adapter", None)))
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
