"""Start `rrg serve` in a child process and wait until it is healthy: for scripts, benchmarks and tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerFailedError(RuntimeError):
    """The server exited or never became healthy; the message ends with its log's tail."""


@contextmanager
def server_process(
    bundle: str | Path, engine: str, log_path: str | Path, kv_cache_gib: int = 1, startup_seconds: float = 420,
    env: dict[str, str] | None = None, options: Sequence[str] = (),
) -> Iterator[tuple[str, subprocess.Popen]]:
    """The base URL and process of an `rrg serve` on loopback, once healthy; on exit it is stopped
    (SIGINT, then killed).

    env: variables added to this process's environment for the server; options: more `rrg serve` options.
    """
    port = free_port()
    command = [sys.executable, "-m", "rrg.cli", "serve", "--bundle", str(bundle), "--engine", engine,
               "--port", str(port), "--kv-cache-gib", str(kv_cache_gib), *options]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}
    log_path = Path(log_path)
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(process, url, log_path, startup_seconds)
        yield url, process
    finally:
        _stop(process)


@contextmanager
def running_server(
    bundle: str | Path, engine: str, log_path: str | Path, kv_cache_gib: int = 1, startup_seconds: float = 420,
    env: dict[str, str] | None = None, options: Sequence[str] = (),
) -> Iterator[str]:
    """The base URL of an `rrg serve` on loopback (`server_process` without the process)."""
    with server_process(bundle, engine, log_path, kv_cache_gib, startup_seconds, env, options) as (url, _):
        yield url


def wait_until_healthy(process: subprocess.Popen, url: str, log_path: Path, startup_seconds: float) -> None:
    """Return once `url`/health answers 200; ServerFailedError with the log's tail if the process exits
    or the time runs out."""
    deadline = time.monotonic() + startup_seconds
    while True:
        if process.poll() is not None:
            raise ServerFailedError(f"the server exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise ServerFailedError(f"the server was not healthy after {startup_seconds:.0f} s:\n"
                                    f"{log_path.read_text()[-4000:]}")
        time.sleep(1)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    try:  # vLLM's engine core and workers share the server's process group
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
