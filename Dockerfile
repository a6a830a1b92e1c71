# rrg on a CUDA GPU: the `gpu` extra (vLLM 0.32 in the server process) with the bundle mounted as a volume.
#
#   docker build -t rrg .
#   docker run --gpus all -p 8000:8000 -v /data/bundles/mistral-7b-lora:/bundle:ro -e RRG_API_KEY=... rrg
#
# The bundle is a folder `rrg train` wrote (config.json, vision/, index/, llm/, lora/ ...). The container
# serves it on :8000 (page at /, API at /v1/completions, /health, /metrics); pass more `rrg serve`
# options after the image name. It cannot be built on the 2-core CPU machines rrg is developed on
# (no Docker engine there): README "Docker" says what was and was not checked.
FROM nvidia/cuda:12.8.1-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    HF_HUB_OFFLINE=1 \
    GRADIO_ANALYTICS_ENABLED=False

# Java for rrg-eval's METEOR; curl for the health check.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl default-jre-headless \
    && rm -rf /var/lib/apt/lists/*
COPY --from=ghcr.io/astral-sh/uv:0.9.8 /uv /usr/local/bin/uv

RUN useradd --create-home --uid 1000 rrg
WORKDIR /app
# Dependencies first (a layer that survives code changes), then the code.
COPY pyproject.toml uv.lock README.md ./
RUN uv python install 3.11 \
    && uv sync --frozen --extra gpu --no-install-project \
    # FAISS with CUDA kernels in place of the CPU wheel (same `faiss` module).
    && uv pip uninstall faiss-cpu \
    && uv pip install faiss-gpu-cu12==1.14.1.post1
COPY rrg rrg
COPY retrieval retrieval
COPY prompts prompts
COPY serving serving
COPY eval eval
RUN uv pip install --no-deps . && chown -R rrg:rrg /app

USER rrg
EXPOSE 8000
VOLUME ["/bundle"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8000/health || exit 1
ENTRYPOINT ["/app/.venv/bin/rrg", "serve", "--bundle", "/bundle", "--host", "0.0.0.0", "--port", "8000", "--engine", "vllm"]
