"""The standalone server's embedded embedding model: WordLlama's 256-dimension static model
(MIT), which ships inside the ``wordllama`` wheel, loaded from the wheel's own files so it
works offline (``WordLlama.load()`` would look for its tokenizer on the network).

CPython only (numpy, tokenizers): the ``local`` extra's, never imported by the core. The
semantic cache calls it through the :class:`~flaregate.cache.semantic.embeddings.Embedder`
shape: texts in, unit vectors (lists of floats) out.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("flaregate.cache")

MODEL_NAME = "wordllama-l2-supercat-256"
DIMENSIONS = 256


class StaticEmbedder:
    """WordLlama loaded once per process (about 0.5 s and 20 MB); embedding is synchronous
    and takes tens of microseconds a prompt, so it runs inline."""

    name = MODEL_NAME

    def __init__(self) -> None:
        import wordllama  # the local extra's: absent from the Worker
        from wordllama import WordLlama

        package = Path(wordllama.__file__).parent
        self._model: Any = WordLlama.load(config="l2_supercat", dim=DIMENSIONS, cache_dir=package,
                                          disable_download=True)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return self.embed_now(texts)

    def embed_now(self, texts: list[str]) -> list[list[float]]:
        vectors = self._model.embed(texts, norm=True)
        return [[float(x) for x in row] for row in vectors.tolist()]
