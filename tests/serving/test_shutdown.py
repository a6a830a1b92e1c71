"""Graceful shutdown: SIGINT stops new connections, lets the draft in flight finish, then exits."""

from __future__ import annotations

import base64
import signal
import threading
import time

import httpx
import pytest

from rrg.data.manifest import read_manifest
from serving.launch import ServerFailedError, server_process

pytestmark = pytest.mark.slow


def _in_flight(url: str) -> float:
    metrics = httpx.get(f"{url}/metrics", timeout=5).text
    return float(next(line for line in metrics.splitlines() if line.startswith("rrg_requests_in_flight ")).split()[1])


def test_sigint_lets_the_request_in_flight_finish(micro_bundle, micro_data, tmp_path):
    image = (micro_data / next(r for r in read_manifest(micro_data) if r["split"] == "test")["image"]).read_bytes()
    body = {"image": base64.b64encode(image).decode(), "n": 8, "max_tokens": 300, "min_tokens": 300}
    try:
        with server_process(micro_bundle, "hf", tmp_path / "server.log") as (url, process):
            answer = {}
            request = threading.Thread(target=lambda: answer.update(
                response=httpx.post(f"{url}/v1/completions", json=body, timeout=120)))
            request.start()
            deadline = time.monotonic() + 60
            while _in_flight(url) < 1:
                assert time.monotonic() < deadline, "the request never started"
                time.sleep(0.005)
            process.send_signal(signal.SIGINT)
            request.join(timeout=120)
            assert process.wait(timeout=60) == 0
    except ServerFailedError as error:
        pytest.fail(str(error))
    response = answer["response"]
    assert response.status_code == 200, response.text
    assert len(response.json()["choices"]) == 8 and response.json()["usage"]["completion_tokens"] == 8 * 300
    log = (tmp_path / "server.log").read_text()
    assert "Waiting for connections to close" in log or "Shutting down" in log
