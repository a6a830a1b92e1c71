"""The exact cosine index: FAISS results equal a numpy brute force, survive a save/load round trip."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from retrieval.cosine_index import CosineIndex, Neighbor

DIM = 16


def _corpus(count: int, seed: int = 0) -> tuple[np.ndarray, list[str], list[str]]:
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(count, DIM)) * rng.uniform(0.1, 10.0, size=(count, 1))
    ids = [f"study-{i:03d}" for i in range(count)]
    reports = [f"report of study {i}." for i in range(count)]
    return embeddings, ids, reports


def _brute_force(
    embeddings: np.ndarray, ids: list[str], query: np.ndarray, k: int
) -> list[tuple[str, float]]:
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    distances = 1.0 - unit @ (query / np.linalg.norm(query))
    order = sorted(range(len(ids)), key=lambda row: (distances[row], ids[row]))[:k]
    return [(ids[row], float(distances[row])) for row in order]


def _assert_same(neighbors: list[Neighbor], expected: list[tuple[str, float]]) -> None:
    assert [n.id for n in neighbors] == [study_id for study_id, _ in expected]
    np.testing.assert_allclose([n.distance for n in neighbors], [d for _, d in expected], atol=1e-5)


def test_top_k_equals_numpy_brute_force():
    embeddings, ids, reports = _corpus(200)
    index = CosineIndex.build(embeddings, ids, reports)
    queries = np.random.default_rng(1).normal(size=(25, DIM))
    results = index.search(queries, k=7)
    assert len(results) == 25
    for query, neighbors in zip(queries, results):
        _assert_same(neighbors, _brute_force(embeddings, ids, query, 7))
        assert all(n.report == reports[ids.index(n.id)] for n in neighbors)
        distances = [n.distance for n in neighbors]
        assert distances == sorted(distances) and all(0.0 <= d <= 2.0 for d in distances)


def test_scaled_query_gives_the_same_neighbors():
    embeddings, ids, reports = _corpus(50)
    index = CosineIndex.build(embeddings, ids, reports)
    query = np.random.default_rng(2).normal(size=DIM)
    expected = _brute_force(embeddings, ids, query, 5)
    for scale in (1.0, 1e4, 1e-3):
        _assert_same(index.search(query * scale, 5)[0], expected)


def test_a_study_retrieves_itself_at_distance_zero_and_its_opposite_at_two():
    embeddings, ids, reports = _corpus(20)
    index = CosineIndex.build(embeddings, ids, reports)
    nearest = index.search(embeddings[3] * 5.0, 1)[0][0]
    assert nearest.id == ids[3] and nearest.distance == pytest.approx(0.0, abs=1e-6)
    farthest = index.search(-embeddings[3], 20)[0][-1]
    assert farthest.id == ids[3] and farthest.distance == pytest.approx(2.0, abs=1e-6)


def test_exclude_ids_drops_the_query_study_and_still_returns_k():
    embeddings, ids, reports = _corpus(60)
    index = CosineIndex.build(embeddings, ids, reports)
    own = [ids[0], None, ids[2]]
    results = index.search(embeddings[:3], k=4, exclude_ids=own)
    assert [len(neighbors) for neighbors in results] == [4, 4, 4]
    assert results[0][0].id != ids[0] and ids[0] not in {n.id for n in results[0]}
    assert results[1][0].id == ids[1]  # not excluded: the study is its own nearest
    assert ids[2] not in {n.id for n in results[2]}
    others = [i for i in range(60) if i != 0]
    _assert_same(results[0], _brute_force(embeddings[others], [ids[i] for i in others], embeddings[0], 4))


def test_k_is_capped_at_the_index_size():
    embeddings, ids, reports = _corpus(5)
    index = CosineIndex.build(embeddings, ids, reports)
    assert len(index.search(embeddings[0], 50)[0]) == 5
    assert len(index.search(embeddings[0], 50, exclude_ids=[ids[0]])[0]) == 4


def test_ties_are_broken_by_id_even_across_the_cut():
    # Ten identical directions added in reverse id order: FAISS alone would keep insertion order.
    direction = np.ones((1, DIM))
    ids = [f"tie-{i}" for i in reversed(range(10))]
    index = CosineIndex.build(np.repeat(direction, 10, axis=0), ids, ids)
    index.add(-direction, ["far"], ["far"])
    neighbors = index.search(direction, 3)[0]
    assert [n.id for n in neighbors] == ["tie-0", "tie-1", "tie-2"]
    assert [n.id for n in index.search(direction, 3, exclude_ids=["tie-1"])[0]] == ["tie-0", "tie-2", "tie-3"]


def test_empty_index_returns_empty_lists():
    index = CosineIndex(DIM)
    assert len(index) == 0
    assert index.search(np.ones((3, DIM)), 5) == [[], [], []]


def test_incremental_add_equals_one_build():
    embeddings, ids, reports = _corpus(40)
    whole = CosineIndex.build(embeddings, ids, reports)
    parts = CosineIndex(DIM)
    parts.add(embeddings[:15], ids[:15], reports[:15])
    parts.add(embeddings[15:], ids[15:], reports[15:])
    assert len(parts) == 40
    queries = np.random.default_rng(3).normal(size=(6, DIM))
    assert parts.search(queries, 6) == whole.search(queries, 6)


def test_save_load_round_trip_gives_identical_results_and_reports(tmp_path):
    embeddings, ids, reports = _corpus(80)
    reports[7] = 'Heart size normal.\nNo "effusion" \u2014 \u00e9t\u00e9.'
    index = CosineIndex.build(embeddings, ids, reports)
    index.save(tmp_path / "index")
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == [
        "index.faiss",
        "index.json",
        "reports.jsonl",
    ]
    meta = json.loads((tmp_path / "index" / "index.json").read_text())
    assert meta == {"kind": "cosine", "dim": DIM, "count": 80}
    lines = (tmp_path / "index" / "reports.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [{"id": i, "report": r} for i, r in zip(ids, reports)]

    loaded = CosineIndex.load(tmp_path / "index")
    assert len(loaded) == 80 and loaded.dim == DIM and loaded.kind == "cosine"
    queries = np.random.default_rng(4).normal(size=(10, DIM))
    assert loaded.search(queries, 9, exclude_ids=ids[:10]) == index.search(queries, 9, exclude_ids=ids[:10])
    assert loaded.search(embeddings[7], 1)[0][0].report == reports[7]


def test_add_after_load_works(tmp_path):
    embeddings, ids, reports = _corpus(30)
    CosineIndex.build(embeddings[:20], ids[:20], reports[:20]).save(tmp_path)
    loaded = CosineIndex.load(tmp_path)
    loaded.add(embeddings[20:], ids[20:], reports[20:])
    assert len(loaded) == 30
    with pytest.raises(ValueError, match="already in the index"):
        loaded.add(embeddings[:1], ids[:1], reports[:1])
    query = np.random.default_rng(5).normal(size=DIM)
    _assert_same(loaded.search(query, 8)[0], _brute_force(embeddings, ids, query, 8))


@pytest.mark.parametrize(
    ("embeddings", "ids", "reports", "message"),
    [
        (np.full((2, DIM), np.nan), ["a", "b"], ["", ""], "NaN or inf"),
        (np.array([[np.inf] + [0.0] * (DIM - 1)]), ["a"], [""], "NaN or inf"),
        (np.ones((2, DIM + 1)), ["a", "b"], ["", ""], "shape"),
        (np.ones(DIM), ["a"], [""], "shape"),
        (np.zeros((1, DIM)), ["a"], [""], "zero vectors"),
        (np.ones((2, DIM)), ["a", "a"], ["", ""], "duplicate ids"),
        (np.ones((2, DIM)), ["a", "b"], [""], "2 ids but 1 reports"),
        (np.ones((3, DIM)), ["a", "b"], ["", ""], "3 embeddings but 2 ids"),
        (np.ones((1, DIM)), [7], [""], "ids must be strings"),
        (np.array([["x"] * DIM]), ["a"], [""], "real numbers"),
    ],
)
def test_add_rejects_bad_input_with_a_clear_message(embeddings, ids, reports, message):
    index = CosineIndex(DIM)
    with pytest.raises(ValueError, match=message):
        index.add(embeddings, ids, reports)
    assert len(index) == 0


@pytest.mark.parametrize(
    ("queries", "k", "exclude_ids", "message"),
    [
        (np.ones((1, DIM)), 0, None, "k must be a positive integer"),
        (np.ones((1, DIM)), -3, None, "k must be a positive integer"),
        (np.ones((1, DIM)), 2.5, None, "k must be a positive integer"),
        (np.ones((1, DIM + 2)), 1, None, "shape"),
        (np.full((1, DIM), np.nan), 1, None, "NaN or inf"),
        (np.zeros(DIM), 1, None, "zero vectors"),
        (np.ones((2, DIM)), 1, ["a"], "1 exclude_ids for 2 queries"),
        (np.ones((3, DIM)), 1, "abc", "one id \\(or None\\) per query"),
    ],
)
def test_search_rejects_bad_input_with_a_clear_message(queries, k, exclude_ids, message):
    embeddings, ids, reports = _corpus(5)
    index = CosineIndex.build(embeddings, ids, reports)
    with pytest.raises(ValueError, match=message):
        index.search(queries, k, exclude_ids=exclude_ids)


def test_dimension_must_be_positive():
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        CosineIndex(0)


def test_load_names_a_missing_file(tmp_path):
    embeddings, ids, reports = _corpus(5)
    CosineIndex.build(embeddings, ids, reports).save(tmp_path)
    (tmp_path / "reports.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="reports.jsonl"):
        CosineIndex.load(tmp_path)


def test_load_refuses_another_kind_of_index(tmp_path):
    embeddings, ids, reports = _corpus(5)
    CosineIndex.build(embeddings, ids, reports).save(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps({"kind": "hyperbolic", "dim": DIM, "count": 5}))
    with pytest.raises(ValueError, match="'hyperbolic' index, not 'cosine'"):
        CosineIndex.load(tmp_path)


def test_load_refuses_counts_that_disagree(tmp_path):
    embeddings, ids, reports = _corpus(5)
    CosineIndex.build(embeddings, ids, reports).save(tmp_path)
    lines = (tmp_path / "reports.jsonl").read_text().splitlines()
    (tmp_path / "reports.jsonl").write_text("\n".join(lines[:4]) + "\n")
    with pytest.raises(ValueError, match="disagrees on the row count"):
        CosineIndex.load(tmp_path)


def test_load_refuses_a_faiss_index_of_another_metric(tmp_path):
    embeddings, ids, reports = _corpus(5)
    CosineIndex.build(embeddings, ids, reports).save(tmp_path)
    euclidean = faiss.IndexFlatL2(DIM)
    euclidean.add(embeddings.astype(np.float32))
    faiss.write_index(euclidean, str(tmp_path / "index.faiss"))
    with pytest.raises(ValueError, match="not an exact inner-product index"):
        CosineIndex.load(tmp_path)
