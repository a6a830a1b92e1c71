"""Load: concurrent OpenAI clients against `rrg serve` (the server `make serve` starts), per engine.

For each run, N client threads, each with its own OpenAI client, draft phantoms of the demo test
split back to back for --seconds (greedy, --tokens new tokens each: min_tokens = max_tokens, so
every engine does the same work). Prints requests done, errors, p50/p95/p99 latency, requests/s and
generated tokens/s; then the vLLM/transformers throughput ratio at --compare-clients clients.

    uv run python bench/load.py [--bundle B] [--seconds 60] [--clients 32] [--compare-clients 16] [--tokens 64]
"""

from __future__ import annotations

import argparse
import base64
import sys
import tempfile
import threading
import time
from pathlib import Path

import openai
from latency import percentile  # bench/latency.py, beside this script

from eval.labeler import RULES_LABELER_NAME, label_report
from rrg.demo import read_manifest
from rrg.demo_bundle import ensure_demo_bundle
from rrg.paths import demo_data_dir
from serving.launch import running_server


def load(url: str, images: list[str], clients: int, seconds: float, tokens: int) -> dict:
    """Run `clients` threads drafting back to back for `seconds`; their latencies, tokens and errors."""
    latencies, generated, errors = [], [], []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client_loop(worker: int) -> None:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
        i = worker
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                completion = client.completions.create(
                    model="", prompt="", max_tokens=tokens, temperature=0,
                    extra_body={"image": images[i % len(images)], "min_tokens": tokens},
                )
            except openai.OpenAIError as error:
                with lock:
                    errors.append(type(error).__name__)
            else:
                with lock:
                    latencies.append(time.perf_counter() - started)
                    generated.append(completion.usage.completion_tokens)
            i += clients

    started = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(w,)) for w in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started  # includes the requests still in flight at the deadline
    return {
        "clients": clients, "requests": len(latencies), "errors": len(errors), "error_kinds": sorted(set(errors)),
        "p50": percentile(latencies, 50), "p95": percentile(latencies, 95), "p99": percentile(latencies, 99),
        "requests_per_s": len(latencies) / elapsed, "tokens_per_s": sum(generated) / elapsed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, help="default: the demo bundle (built if missing)")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--compare-clients", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    bundle = args.bundle or ensure_demo_bundle(label_report, RULES_LABELER_NAME, log=lambda m: print(m, file=sys.stderr))
    data = demo_data_dir()
    images = [base64.b64encode((data / r["image"]).read_bytes()).decode()
              for r in read_manifest(data) if r["split"] == "test"][:64]
    rows = []
    for engine, runs in (("vllm", (args.clients, args.compare_clients)), ("hf", (args.compare_clients,))):
        with tempfile.TemporaryDirectory() as folder, running_server(bundle, engine, Path(folder) / "server.log") as url:
            load(url, images, 2, 5, args.tokens)  # warm-up, not counted
            for clients in runs:
                print(f"{engine}: {clients} clients for {args.seconds:.0f} s ...", file=sys.stderr, flush=True)
                rows.append({"engine": engine, **load(url, images, clients, args.seconds, args.tokens)})

    print(f"Load on loopback, bundle {bundle.name}, {args.tokens} tokens per draft, {args.seconds:.0f} s per run")
    print("| engine | clients | requests | errors | p50 s | p95 s | p99 s | requests/s | tokens/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['engine']} | {r['clients']} | {r['requests']} | {r['errors']} {' '.join(r['error_kinds'])} | "
              f"{r['p50']:.2f} | {r['p95']:.2f} | {r['p99']:.2f} | {r['requests_per_s']:.2f} | {r['tokens_per_s']:.1f} |")
    at = {r["engine"]: r for r in rows if r["clients"] == args.compare_clients}
    ratio = at["vllm"]["tokens_per_s"] / at["hf"]["tokens_per_s"]
    print(f"vLLM/transformers throughput at {args.compare_clients} clients: {ratio:.2f}x (goal >= 3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
