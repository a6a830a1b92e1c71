"""Post-hoc PCA and float16 storage for retrieval embeddings (MedFuse-CLIP section III.B: 512-d to
256-d float16 halves the index and keeps R@10 within 2 %).

The PCA is fitted once on the reference embeddings and then applied to every vector that meets the
index, references and queries alike, so that both live in the same reduced space. On disk it is one
`.npz` file: `mean` (D,) and `components` (dim, D) in float32, and `explained_variance` ().
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrieval.metrics import DEFAULT_KS, cross_modal_report, finite_matrix, paired_unit_rows
from retrieval.reference_reports import check_dim

_FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class PCACompression:
    """A fitted projection: (x - mean) @ components.T, stored as float16."""

    mean: np.ndarray  # (D,) float32
    components: np.ndarray  # (dim, D) float32, orthonormal rows, largest variance first
    explained_variance: float  # the fraction of the fitted vectors' variance the components keep

    @classmethod
    def fit(cls, vectors: np.ndarray, dim: int) -> PCACompression:
        """The `dim` principal directions of `vectors` (N, D), computed by SVD in float64.

        Each direction's sign is chosen so that its largest-magnitude coordinate is positive: SVD may
        return either sign, and a refit on the same vectors must give the same stored vectors.
        """
        vectors = finite_matrix(vectors, "vectors")
        dim = check_dim(dim)
        if dim > min(vectors.shape):
            raise ValueError(
                f"dim {dim} exceeds min(N, D) = {min(vectors.shape)} for vectors {vectors.shape}"
            )
        mean = vectors.mean(axis=0)  # (D,)
        _, singular_values, directions = np.linalg.svd(vectors - mean, full_matrices=False)  # (r,), (r, D)
        variances = singular_values**2
        if variances.sum() == 0:
            raise ValueError("vectors are all identical: there is no variance for PCA to keep")
        components = directions[:dim]  # (dim, D)
        largest = np.abs(components).argmax(axis=1)  # (dim,)
        components = components * np.sign(components[np.arange(dim), largest])[:, None]
        return cls(
            mean=mean.astype(np.float32),
            components=components.astype(np.float32),
            explained_variance=float(variances[:dim].sum() / variances.sum()),
        )

    @property
    def dim(self) -> int:
        return len(self.components)

    @property
    def bytes_per_vector(self) -> int:
        """The storage of one compressed vector: dim float16 numbers."""
        return self.dim * np.dtype(np.float16).itemsize

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """(N, D) -> (N, dim) float16; ValueError when a coordinate exceeds float16's range."""
        vectors = finite_matrix(vectors, "vectors")
        if vectors.shape[1] != len(self.mean):
            raise ValueError(f"vectors must have shape (N, {len(self.mean)}), got {vectors.shape}")
        projected = (vectors.astype(np.float32) - self.mean) @ self.components.T  # (N, dim) float32
        if (np.abs(projected) > _FLOAT16_MAX).any():
            raise ValueError(
                f"projected vectors exceed float16's range (+-{_FLOAT16_MAX:g}); normalise them first"
            )
        return projected.astype(np.float16)

    def save(self, path: str | Path) -> None:
        """Write mean, components and explained_variance to one `.npz` file."""
        np.savez(
            Path(path), mean=self.mean, components=self.components, explained_variance=self.explained_variance
        )

    @classmethod
    def load(cls, path: str | Path) -> PCACompression:
        """Read a file written by `save`; ValueError when it is not one."""
        with np.load(Path(path), allow_pickle=False) as stored:
            missing = {"mean", "components", "explained_variance"} - set(stored.files)
            if missing:
                raise ValueError(f"{path} lacks {sorted(missing)}: not a PCACompression file")
            mean, components = stored["mean"], stored["components"]
            explained_variance = float(stored["explained_variance"])
        if mean.ndim != 1 or components.ndim != 2 or components.shape[1] != len(mean):
            raise ValueError(
                f"{path} holds mean {mean.shape} and components {components.shape}, which do not fit"
            )
        return cls(
            mean=mean.astype(np.float32),
            components=components.astype(np.float32),
            explained_variance=explained_variance,
        )


def recall_kept(
    image_embeddings: np.ndarray, text_embeddings: np.ndarray, dim: int, ks: Iterable[int] = DEFAULT_KS
) -> dict:
    """Cross-modal recall before and after compression to `dim` float16 numbers, and the fraction kept.

    The PCA is fitted on both modalities' unit embeddings together, so images and reports share one
    reduced space, and the compressed vectors are compared by cosine, as the index will.

    {"dim", "explained_variance", "bytes_per_vector": {"full", "compressed"},
     "full": cross_modal_report(...), "compressed": cross_modal_report(...),
     "kept": {"image_to_text": {"recall@k": compressed / full, ...}, "text_to_image": {...}}}
    A kept fraction is None where the full recall is 0.
    """
    ks = tuple(ks)
    image, text = paired_unit_rows(image_embeddings, text_embeddings)
    compression = PCACompression.fit(np.concatenate([image, text]), dim)
    full = cross_modal_report(image.astype(np.float32), text.astype(np.float32), ks)
    compressed = cross_modal_report(compression.transform(image), compression.transform(text), ks)
    kept = {
        direction: {
            name: (compressed[direction][name] / value if value > 0 else None)
            for name, value in scores.items()
            if name.startswith("recall@")
        }
        for direction, scores in full.items()
    }
    return {
        "dim": compression.dim,
        "explained_variance": compression.explained_variance,
        "bytes_per_vector": {
            "full": image.shape[1] * np.dtype(np.float32).itemsize,
            "compressed": compression.bytes_per_vector,
        },
        "full": full,
        "compressed": compressed,
        "kept": kept,
    }
