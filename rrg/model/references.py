"""From what the vision encoder saw to the reference reports of the prompt (`retrieval.kind`).

    cosine      the training studies whose image embeddings are nearest in cosine (retrieval v1)
    hyperbolic  REVTAF's LRE: the image's 75 entity logits through the hyperbolic network onto the
                Poincare ball, and the training studies nearest there (exact hyperbolic kNN)

Both kinds index images, so a reference report joins an index with its image: `rrg index build`
embeds a report set's images with the bundle's own encoder (and LRE) and writes the bundle's index.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from retrieval.cosine_index import CosineIndex
from retrieval.hyperbolic_index import HyperbolicIndex
from retrieval.lre import RetrievalEnhancer
from retrieval.reference_reports import Neighbor


class ReferenceRetriever:
    """A bundle's retrieval: the index over reference studies and, for `hyperbolic`, the LRE that
    places a query in the index's space."""

    def __init__(self, index: CosineIndex | HyperbolicIndex, enhancer: RetrievalEnhancer | None = None):
        if (index.kind == "hyperbolic") != (enhancer is not None):
            raise ValueError(f"a {index.kind} index {'needs' if enhancer is None else 'takes no'} LRE")
        self.index, self.enhancer = index, enhancer
        self.kind = index.kind

    @torch.no_grad()
    def embed(self, pooled: torch.Tensor, entity_logits: torch.Tensor) -> np.ndarray:
        """The index-space vectors of a batch: image embeddings (cosine) or LRE points (hyperbolic)."""
        if self.enhancer is None:
            return pooled.detach().cpu().numpy()
        return self.enhancer(entity_logits).double().cpu().numpy()

    def search(
        self, pooled: torch.Tensor, entity_logits: torch.Tensor, k: int, exclude_ids: Sequence[str | None] | None = None
    ) -> list[list[Neighbor]]:
        """The k nearest reference studies to each image of the batch."""
        return self.index.search(self.embed(pooled, entity_logits), k, exclude_ids=exclude_ids)

    @classmethod
    def build(
        cls, pooled: torch.Tensor, entity_logits: torch.Tensor, ids: Sequence[str], reports: Sequence[str],
        enhancer: RetrievalEnhancer | None = None,
    ) -> ReferenceRetriever:
        """A retriever with a new index over the given reference studies: hyperbolic with an LRE,
        cosine without."""
        if enhancer is None:
            return cls(CosineIndex.build(pooled.detach().cpu().numpy(), ids, reports))
        with torch.no_grad():
            points = enhancer(entity_logits).double().cpu().numpy()
        return cls(HyperbolicIndex.build(points, ids, reports, enhancer.curvature), enhancer)
