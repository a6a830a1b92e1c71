"""Load: concurrent clients against `rrg serve` (the server `make serve` starts), per engine.

For each run, N client threads, each with its own OpenAI client, draft phantoms of the demo test
split back to back for --seconds (greedy, --tokens new tokens each: min_tokens = max_tokens, so
every engine does the same work). Prints requests done, errors, p50/p95/p99 latency, requests/s and
generated tokens/s; then the vLLM/transformers throughput ratio at --compare-clients clients.

Then, on the vLLM server, abuse: a fault-mixing run (60 % valid requests, 40 % invalid ones of a
dozen kinds, --compare-clients keep-alive httpx clients for --seconds; valid requests must see no
error, invalid ones their 4xx, every connection must survive) with the server's RSS before and
after, and the server's peak RSS over one request with each of the largest images it accepts.

    uv run python bench/load.py [--bundle B] [--seconds 60] [--clients 32] [--compare-clients 16] [--tokens 64]
                                [--abuse-only]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import openai
from latency import percentile  # bench/latency.py, beside this script
from PIL import Image

from rrg.data.manifest import read_manifest
from rrg.demo.bundle import ensure_demo_bundle
from rrg.paths import demo_data_dir
from serving.launch import server_process


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


# --- abuse: invalid requests mixed with valid ones, and the largest images ------------------------------------


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _dicom(stored: np.ndarray, declared_pixel_bytes: int | None = None) -> bytes:
    """A 16-bit MONOCHROME2 DX DICOM of `stored`; declared_pixel_bytes: a PixelData length that lies."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.1.1", generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta, dataset.Modality = meta, "DX"
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.Rows, dataset.Columns = stored.shape
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 12, 11, 0
    dataset.PixelData = stored.astype(np.uint16).tobytes()
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    if declared_pixel_bytes is not None:  # (7FE0,0010) OW: tag, VR, 2 reserved bytes, then the 4-byte length
        at = data.rindex(b"\xe0\x7f\x10\x00") + 8
        data = data[:at] + declared_pixel_bytes.to_bytes(4, "little") + data[at + 4:]
    return data


def invalid_requests(image: str) -> dict[str, tuple[dict | bytes, int]]:
    """Kinds of invalid request, each a JSON body (or raw bytes) and the status it must get."""
    valid = {"image": image, "max_tokens": 8}
    gray = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))
    return {
        "seed over int64": ({**valid, "seed": 2**64}, 400),
        "empty stop string": ({**valid, "stop": [""]}, 400),
        "logprobs": ({**valid, "logprobs": 2}, 400),
        "unknown model": ({**valid, "model": "gpt-4"}, 404),
        "not an image": ({**valid, "image": base64.b64encode(b"patient notes, not an image").decode()}, 400),
        "truncated PNG": ({**valid, "image": base64.b64encode(_png(gray)[:-40]).decode()}, 400),
        "1 MB prompt": ({**valid, "prompt": "lung " * 200_000}, 400),
        "16384 x 3050 PNG": ({**valid, "image": base64.b64encode(_png(np.full((3050, 16384, 3), 90, np.uint8))).decode()},
                             413),
        "DICOM claiming 2 GB": ({**valid, "image": base64.b64encode(_dicom(gray.astype(np.uint16) * 16, 2**31 - 2)).decode()},
                                400),
        "max_tokens over the context": ({**valid, "max_tokens": 1_000_000}, 400),
        "wrong type": ({**valid, "n": "two"}, 400),
        "malformed JSON": (b'{"image": "' + image[:64].encode(), 400),
    }


def tree_memory(pid: int) -> tuple[float, float]:
    """(RSS, peak RSS since the last reset) in MiB of a process and its descendants."""
    rss = peak = 0.0
    for member in _process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        rss += int(fields.get("VmRSS", "0 kB").split()[0]) / 1024
        peak += int(fields.get("VmHWM", "0 kB").split()[0]) / 1024
    return rss, peak


def reset_peak(pid: int) -> None:
    for member in _process_tree(pid):
        try:
            Path(f"/proc/{member}/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux 4.0+)
        except OSError:
            pass


def _process_tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, frontier = [pid], [pid]
    while frontier:
        frontier = [child for parent in frontier for child in children.get(parent, [])]
        tree += frontier
    return tree


def mixed_load(url: str, pid: int, images: list[str], clients: int, seconds: float, tokens: int,
               valid_share: float = 0.6) -> dict:
    """`clients` keep-alive clients for `seconds`, each request valid with probability `valid_share`, else
    one of `invalid_requests`; latencies and errors of the valid ones, statuses of the invalid ones."""
    kinds = invalid_requests(images[0])
    latencies, valid_errors, outcomes, connections = [], Counter(), Counter(), []
    lock = threading.Lock()
    load(url, images, clients, 10, tokens)  # valid only, so the engine has touched what it holds at this load
    rss_before, _ = tree_memory(pid)
    deadline = time.perf_counter() + seconds

    def client_loop(worker: int) -> None:
        chooser, ports = random.Random(worker), set()
        with httpx.Client(base_url=url, timeout=600, limits=httpx.Limits(max_connections=1)) as client:
            while time.perf_counter() < deadline:
                valid = chooser.random() < valid_share
                kind = "valid" if valid else chooser.choice(sorted(kinds))
                body, expected = ({"image": chooser.choice(images), "max_tokens": tokens, "min_tokens": tokens}, 200) \
                    if valid else kinds[kind]
                started = time.perf_counter()
                try:
                    if isinstance(body, bytes):
                        response = client.post("/v1/completions", content=body,
                                               headers={"content-type": "application/json"})
                    else:
                        response = client.post("/v1/completions", json=body)
                    status = response.status_code
                    ports.add(response.extensions["network_stream"].get_extra_info("socket").getsockname()[1])
                except httpx.HTTPError as error:
                    status = type(error).__name__
                with lock:
                    if valid and status == 200:
                        latencies.append(time.perf_counter() - started)
                    elif valid:
                        valid_errors[str(status)] += 1
                    else:
                        outcomes[(kind, status if status == expected else f"{status} (expected {expected})")] += 1
        with lock:
            connections.append(len(ports))

    threads = [threading.Thread(target=client_loop, args=(w,)) for w in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rss_after, _ = tree_memory(pid)
    time.sleep(5)
    rss_settled, _ = tree_memory(pid)
    return {
        "clients": clients, "valid": len(latencies) + sum(valid_errors.values()),
        "valid_errors": sum(valid_errors.values()), "valid_error_kinds": dict(valid_errors),
        "invalid": sum(outcomes.values()), "outcomes": outcomes, "connections": sum(connections),
        "p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
        "rss_before": rss_before, "rss_after": rss_after, "rss_settled": rss_settled,
    }


def print_mixed(result: dict, seconds: float) -> None:
    print(f"Fault-mixing load on the vLLM server: {result['clients']} keep-alive clients for {seconds:.0f} s, "
          f"60 % valid requests")
    print("| requests | count | errors | p50 s | p95 s |")
    print("|---|---:|---:|---:|---:|")
    print(f"| valid | {result['valid']} | {result['valid_errors']} {json.dumps(result['valid_error_kinds'])} | "
          f"{result['p50']:.2f} | {result['p95']:.2f} |")
    unexpected = sum(n for (_, status), n in result["outcomes"].items() if not isinstance(status, int))
    print(f"| invalid | {result['invalid']} | {unexpected} not answered as expected | | |")
    print()
    print("| invalid kind | status | count |")
    print("|---|---|---:|")
    for (kind, status), count in sorted(result["outcomes"].items(), key=lambda item: (item[0][0], str(item[0][1]))):
        print(f"| {kind} | {status} | {count} |")
    print()
    print(f"Connections opened by the {result['clients']} clients: {result['connections']} "
          f"({result['clients']} means every one survived every error).")
    print(f"Server RSS (process tree): {result['rss_before']:,.0f} MiB before, {result['rss_after']:,.0f} MiB "
          f"after, {result['rss_settled']:,.0f} MiB 5 s later.")


def large_image_memory(url: str, pid: int) -> list[dict]:
    """The server's peak RSS over one request with each of the largest images it accepts (and one it refuses)."""
    side = 4300  # a 43 cm detector at 100 um
    ramp = np.tile(np.linspace(0, 1, side, dtype=np.float32), (side, 1))
    noise = np.random.default_rng(0).random((side, side), dtype=np.float32) * 0.05
    gray = np.clip(ramp + noise, 0, 1)
    cases = {
        f"RGB PNG {side} x {side}": _png((np.stack([gray] * 3, axis=-1) * 255).astype(np.uint8)),
        f"16-bit PNG {side} x {side}": _png((gray * 65535).astype(np.uint16)),
        f"JPEG {side} x {side}": _jpeg((gray * 255).astype(np.uint8)),
        f"16-bit DICOM {side} x {side}": _dicom((gray * 4095).astype(np.uint16)),
        "RGB PNG 16384 x 3050 (refused)": _png(np.full((3050, 16384, 3), 90, np.uint8)),
    }
    rows = []
    with httpx.Client(base_url=url, timeout=600) as client:
        for name, data in cases.items():
            body = {"image": base64.b64encode(data).decode(), "max_tokens": 8}
            client.post("/v1/completions", json=body)  # once to warm whatever it touches
            rss_before, _ = tree_memory(pid)
            reset_peak(pid)
            response = client.post("/v1/completions", json=body)
            rss_after, peak = tree_memory(pid)
            rows.append({"image": name, "file_mib": len(data) / 2**20, "status": response.status_code,
                         "rss_before": rss_before, "peak_over": peak - rss_before, "rss_after": rss_after})
    return rows


def print_large_images(rows: list[dict]) -> None:
    print("Peak RSS of the vLLM server's process tree over one request with each of the largest images")
    print("| image | file MiB | status | RSS before MiB | peak above it MiB | RSS after MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['image']} | {r['file_mib']:.1f} | {r['status']} | {r['rss_before']:,.0f} | {r['peak_over']:,.0f} | "
              f"{r['rss_after']:,.0f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, help="default: the demo bundle (built if missing)")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--compare-clients", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--abuse-only", action="store_true", help="only the vLLM server's mixed run and large images")
    args = parser.parse_args()
    bundle = args.bundle or ensure_demo_bundle(log=lambda m: print(m, file=sys.stderr))
    data = demo_data_dir()
    images = [base64.b64encode((data / r["image"]).read_bytes()).decode()
              for r in read_manifest(data) if r["split"] == "test"][:64]
    plan = (("vllm", ()),) if args.abuse_only else (("vllm", (args.clients, args.compare_clients)),
                                                     ("hf", (args.compare_clients,)))
    rows, mixed, large = [], None, None
    for engine, runs in plan:
        with (tempfile.TemporaryDirectory() as folder,
              server_process(bundle, engine, Path(folder) / "server.log") as (url, process)):
            load(url, images, 2, 5, args.tokens)  # warm-up, not counted
            for clients in runs:
                print(f"{engine}: {clients} clients for {args.seconds:.0f} s ...", file=sys.stderr, flush=True)
                rows.append({"engine": engine, **load(url, images, clients, args.seconds, args.tokens)})
            if engine == "vllm":
                print(f"vllm: mixed valid and invalid requests, {args.compare_clients} clients ...", file=sys.stderr)
                mixed = mixed_load(url, process.pid, images, args.compare_clients, args.seconds, args.tokens)
                print("vllm: the largest images ...", file=sys.stderr, flush=True)
                large = large_image_memory(url, process.pid)

    if rows:
        print(f"Load on loopback, bundle {bundle.name}, {args.tokens} tokens per draft, {args.seconds:.0f} s per run")
        print("| engine | clients | requests | errors | p50 s | p95 s | p99 s | requests/s | tokens/s |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['engine']} | {r['clients']} | {r['requests']} | {r['errors']} {' '.join(r['error_kinds'])} | "
                  f"{r['p50']:.2f} | {r['p95']:.2f} | {r['p99']:.2f} | {r['requests_per_s']:.2f} | "
                  f"{r['tokens_per_s']:.1f} |")
        at = {r["engine"]: r for r in rows if r["clients"] == args.compare_clients}
        ratio = at["vllm"]["tokens_per_s"] / at["hf"]["tokens_per_s"]
        print(f"vLLM/transformers throughput at {args.compare_clients} clients: {ratio:.2f}x (goal >= 3x)")
        print()
    print_mixed(mixed, args.seconds)
    print()
    print_large_images(large)
    return 0 if mixed["valid_errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
