"""Text embeddings for custom metrics.

The default embedder is a real, deterministic lexical embedding (signed feature hashing of
word and character-trigram features, L2-normalised) that needs no model download; it puts
metrics with similar names, units and descriptions near each other. The dimension matches
all-MiniLM-L6-v2 (384), so a neural embedder can replace it without a migration.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from typing import Protocol

from zixly.db.models import EMBEDDING_DIMENSIONS

_WORD = re.compile(r"[a-z0-9]+")


class Embedder(Protocol):
    dimensions: int

    def embed(self, text: str) -> list[float]: ...


class HashingEmbedder:
    dimensions = EMBEDDING_DIMENSIONS

    def _features(self, text: str) -> list[tuple[str, float]]:
        words = _WORD.findall(text.lower().replace("_", " "))
        features: list[tuple[str, float]] = [(f"w:{w}", 1.0) for w in words]
        features += [(f"b:{a}_{b}", 0.7) for a, b in itertools.pairwise(words)]
        for word in words:
            padded = f"^{word}$"
            features += [(f"c:{padded[i : i + 3]}", 0.3) for i in range(len(padded) - 2)]
        return features

    def embed(self, text: str) -> list[float]:
        vector = [0.0] * self.dimensions
        for feature, weight in self._features(text):
            digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
            index = int.from_bytes(digest[:4], "little") % self.dimensions
            sign = 1.0 if digest[4] & 1 else -1.0
            vector[index] += sign * weight
        norm = math.sqrt(sum(v * v for v in vector))
        if norm == 0.0:
            vector[0] = 1.0
            return vector
        return [v / norm for v in vector]


def metric_text(metric_name: str, unit: str | None, description: str | None = None) -> str:
    return " ".join(part for part in (metric_name, unit or "", description or "") if part)
