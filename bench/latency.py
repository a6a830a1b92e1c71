"""Latency of POST /v1/completions with a bundle (default: the demo bundle), per engine, side by side.

Sequential requests (one at a time, so this is the latency a single user sees, not throughput),
each a draft of exactly --tokens tokens (min_tokens = max_tokens), greedy, for phantoms of the
demo test split. Prints p50 and p95 per engine and their ratio.

    uv run python bench/latency.py [--bundle B] [--requests 30] [--tokens 100] [--engines vllm,hf]
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import openai

from rrg.data.manifest import read_manifest
from rrg.demo.bundle import ensure_demo_bundle
from rrg.paths import demo_data_dir
from serving.launch import running_server


def percentile(values: list[float], q: int) -> float:
    """The q-th percentile of `values` (statistics' inclusive method; the value itself for one, nan for none)."""
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def measure(bundle: Path, engine: str, images: list[bytes], tokens: int, warmup: int) -> dict:
    """Latencies (s) of sequential drafts through a freshly started server."""
    with tempfile.TemporaryDirectory() as folder, running_server(bundle, engine, Path(folder) / "server.log") as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)
        latencies, generated = [], []
        for i, image in enumerate([images[0]] * warmup + images):
            started = time.perf_counter()
            completion = client.completions.create(
                model="", prompt="", max_tokens=tokens, temperature=0,  # model "": the served adapter
                extra_body={"image": base64.b64encode(image).decode(), "min_tokens": tokens},
            )
            elapsed = time.perf_counter() - started
            if i >= warmup:
                latencies.append(elapsed)
                generated.append(completion.usage.completion_tokens)
    return {
        "engine": engine,
        "requests": len(latencies),
        "tokens_per_draft": statistics.mean(generated),
        "p50_s": percentile(latencies, 50),
        "p95_s": percentile(latencies, 95),
        "mean_s": statistics.mean(latencies),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="default: the demo bundle (built if missing)")
    parser.add_argument("--data", type=Path, help="a data folder whose test split gives the images (default: demo data)")
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--engines", default="vllm,hf")
    args = parser.parse_args()
    bundle = args.bundle or ensure_demo_bundle()
    data = args.data or demo_data_dir()
    records = [r for r in read_manifest(data) if r["split"] == "test"][: args.requests]
    images = [(data / r["image"]).read_bytes() for r in records]
    results = [measure(bundle, engine, images, args.tokens, args.warmup) for engine in args.engines.split(",")]
    print(f"\n/v1/completions latency, {bundle.name}, {len(images)} sequential requests, "
          f"{args.tokens}-token drafts, 2-core CPU")
    print(f"{'engine':8} {'p50 s':>8} {'p95 s':>8} {'mean s':>8} {'tokens':>7}")
    for row in results:
        print(f"{row['engine']:8} {row['p50_s']:8.3f} {row['p95_s']:8.3f} {row['mean_s']:8.3f} {row['tokens_per_draft']:7.1f}")
    if len(results) == 2:
        print(f"p50 ratio {results[1]['engine']}/{results[0]['engine']}: {results[1]['p50_s'] / results[0]['p50_s']:.2f}x")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
