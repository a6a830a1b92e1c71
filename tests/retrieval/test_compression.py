"""PCA + float16 compression: shapes and dtypes, an exact rotation at full width, recall kept when the
signal lives in a few dimensions, and a save/load round trip."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.compression import PCACompression, recall_kept


def _low_rank_pairs(count: int, width: int, signal_dims: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Image/report pairs that share a `signal_dims`-dimensional code, spread over `width` dimensions
    with a little independent noise in every one of them."""
    rng = np.random.default_rng(seed)
    codes = rng.normal(size=(count, signal_dims))
    basis = np.linalg.qr(rng.normal(size=(width, signal_dims)))[0].T  # (signal_dims, width) orthonormal
    image = codes @ basis + 0.05 * rng.normal(size=(count, width))
    text = codes @ basis + 0.05 * rng.normal(size=(count, width))
    return image, text


def test_transform_gives_float16_rows_of_the_chosen_width():
    vectors = np.random.default_rng(0).normal(size=(40, 12))
    compression = PCACompression.fit(vectors, 5)
    compressed = compression.transform(vectors)
    assert compressed.shape == (40, 5) and compressed.dtype == np.float16
    assert compression.mean.dtype == compression.components.dtype == np.float32
    assert compression.bytes_per_vector == 10
    np.testing.assert_allclose(compression.components @ compression.components.T, np.eye(5), atol=1e-6)
    assert 5 / 12 < compression.explained_variance < 1.0
    # The sign convention makes a refit on permuted rows store the same vectors.
    refit = PCACompression.fit(vectors[::-1], 5)
    np.testing.assert_allclose(refit.components, compression.components, atol=1e-5)


def test_full_width_is_a_rotation_up_to_float16_precision():
    vectors = np.random.default_rng(1).normal(size=(30, 8))
    compression = PCACompression.fit(vectors, 8)
    assert compression.explained_variance == pytest.approx(1.0)
    compressed = compression.transform(vectors).astype(np.float32)
    restored = compressed @ compression.components + compression.mean
    np.testing.assert_allclose(restored, vectors, atol=5e-3)  # float16 keeps ~3 decimal digits
    distances = np.linalg.norm(vectors[:, None] - vectors[None], axis=2)
    np.testing.assert_allclose(
        np.linalg.norm(compressed[:, None] - compressed[None], axis=2), distances, atol=1e-2
    )


def test_recall_is_kept_when_the_signal_lives_in_few_dimensions():
    image, text = _low_rank_pairs(count=60, width=32, signal_dims=6, seed=2)
    result = recall_kept(image, text, dim=8)
    assert result["dim"] == 8 and result["bytes_per_vector"] == {"full": 128, "compressed": 16}
    assert result["explained_variance"] > 0.9
    assert result["full"]["image_to_text"]["recall@1"] > 0.9
    for direction in ("image_to_text", "text_to_image"):
        assert result["kept"][direction]["recall@10"] >= 0.98
        assert result["compressed"][direction]["recall@10"] == pytest.approx(
            result["kept"][direction]["recall@10"] * result["full"][direction]["recall@10"]
        )
    # Two dimensions cannot hold a six-dimensional code: the loss shows.
    assert recall_kept(image, text, dim=2)["kept"]["image_to_text"]["recall@1"] < 0.9


def test_save_and_load_round_trip(tmp_path):
    vectors = np.random.default_rng(3).normal(size=(20, 6))
    compression = PCACompression.fit(vectors, 3)
    compression.save(tmp_path / "pca.npz")
    loaded = PCACompression.load(tmp_path / "pca.npz")
    np.testing.assert_array_equal(loaded.mean, compression.mean)
    np.testing.assert_array_equal(loaded.components, compression.components)
    assert loaded.explained_variance == compression.explained_variance
    np.testing.assert_array_equal(loaded.transform(vectors), compression.transform(vectors))
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    with pytest.raises(ValueError, match="not a PCACompression file"):
        PCACompression.load(tmp_path / "other.npz")


def test_bad_input_is_refused_plainly():
    vectors = np.random.default_rng(4).normal(size=(5, 8))
    with pytest.raises(ValueError, match=r"dim 6 exceeds min\(N, D\) = 5"):
        PCACompression.fit(vectors, 6)
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        PCACompression.fit(vectors, 0)
    with pytest.raises(ValueError, match="NaN or inf"):
        PCACompression.fit(np.full((3, 2), np.nan), 1)
    with pytest.raises(ValueError, match="no variance"):
        PCACompression.fit(np.ones((4, 3)), 2)
    with pytest.raises(ValueError, match=r"must have shape \(N, 8\)"):
        PCACompression.fit(vectors, 2).transform(np.zeros((2, 7)))
    with pytest.raises(ValueError, match="exceed float16's range"):
        PCACompression.fit(vectors, 2).transform(vectors * 1e6)
    with pytest.raises(ValueError, match="same shape"):
        recall_kept(vectors, vectors[:4], 2)
