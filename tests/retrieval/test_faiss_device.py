"""retrieval.device: the CPU by default; "gpu" asks FAISS for every visible GPU and says plainly when
this FAISS (the CPU wheel here) has none. The GPU path itself runs only where faiss-gpu and a GPU are."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.cosine_index import CosineIndex
from retrieval.faiss_device import visible_gpus
from retrieval.hyperbolic_index import HyperbolicIndex
from retrieval.index_files import open_index
from rrg.config import RetrievalConfig, load_model_config


def _saved(tmp_path, kind: str):
    rng = np.random.default_rng(0)
    ids, reports = ["a", "b", "c"], ["one", "two", "three"]
    if kind == "cosine":
        index = CosineIndex.build(rng.normal(size=(3, 4)).astype(np.float32), ids, reports)
    else:
        index = HyperbolicIndex.build(rng.uniform(-0.3, 0.3, size=(3, 4)), ids, reports, 0.01)
    index.save(tmp_path / kind)
    return tmp_path / kind


@pytest.mark.parametrize("kind", ["cosine", "hyperbolic"])
def test_cpu_is_the_default_and_gpu_without_gpus_is_a_plain_error(tmp_path, kind):
    folder = _saved(tmp_path, kind)
    assert [n.id for n in open_index(folder).search(np.zeros(4, dtype=np.float32) + 0.1, 3)[0]]
    if visible_gpus() == 0:
        with pytest.raises(ValueError, match="needs FAISS built with CUDA .* this FAISS sees no GPU"):
            open_index(folder, "gpu")
    with pytest.raises(ValueError, match="index device must be one of cpu, gpu"):
        open_index(folder, "tpu")


def test_the_config_names_the_device_and_the_7b_recipe_asks_for_the_gpu():
    assert RetrievalConfig().device == "cpu"
    assert load_model_config("mistral-7b-lora").retrieval.device == "gpu"
    with pytest.raises(ValueError, match="retrieval.device must be cpu or gpu"):
        RetrievalConfig(device="cuda")
