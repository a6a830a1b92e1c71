"""Where FAISS searches: the CPU (the default), or every GPU it can see (`retrieval.device: gpu`).

A GPU copy needs FAISS built with CUDA (the Dockerfile installs `faiss-gpu-cu12` in place of
`faiss-cpu`) and a visible GPU; anything less is a plain error naming both, never a silent CPU
fallback. Flat indexes move whole (`index_cpu_to_all_gpus` shards their rows across the GPUs);
files are always written from a CPU copy.
"""

from __future__ import annotations

import faiss

DEVICES = ("cpu", "gpu")


def visible_gpus() -> int:
    """GPUs this FAISS can use: 0 for a CPU-only build."""
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def to_gpus(index: faiss.Index) -> faiss.Index:
    """A copy of a CPU flat index on every visible GPU; ValueError where there is none."""
    if visible_gpus() == 0:
        raise ValueError(
            "retrieval.device 'gpu' needs FAISS built with CUDA (pip install faiss-gpu-cu12 in place of "
            "faiss-cpu, as the Dockerfile does) and a visible GPU; this FAISS sees no GPU"
        )
    return faiss.index_cpu_to_all_gpus(index)


def on_cpu(index: faiss.Index) -> faiss.Index:
    """The index itself if it is on the CPU, else a CPU copy (for faiss.write_index)."""
    return faiss.index_gpu_to_cpu(index) if hasattr(faiss, "GpuIndex") and isinstance(index, faiss.GpuIndex) else index
