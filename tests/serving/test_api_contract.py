"""The OpenAI completions contract beyond a plain draft: streaming, API keys, body and queue limits,
timeouts, /metrics, the front's micro-batches, and a matrix of bad input after which /health is OK;
then the real server (uvicorn on loopback) under abuse, through one keep-alive connection per test
that must still carry the next valid request: an unexpected 500, every bad field, a huge prompt, a
huge image, a lying DICOM, the page's file routes, and clients that never finish their headers or body."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest
import torch
from fastapi.testclient import TestClient

from rrg.bundle import Bundle
from rrg.data.imaging import ImageLimits, load_image
from rrg.data.manifest import read_manifest
from rrg.drafting import Drafter
from serving.app import build_app
from serving.completions import CompletionService
from serving.engines import HfEngine
from serving.front import FrontBatcher
from serving.limits import ServerLimits

KEY = "sk-test-0123456789"
MODEL = "test-micro-lora"


class GatedEngine(HfEngine):
    """The real transformers engine, held at a gate the test opens: requests stay in flight until then."""

    def __init__(self, bundle):
        super().__init__(bundle)
        self.gate = threading.Event()
        self.gate.set()

    async def generate(self, prompt_embeds, settings, n, request_id):
        await asyncio.to_thread(self.gate.wait)
        return await super().generate(prompt_embeds, settings, n, request_id)


@pytest.fixture(scope="module")
def served(micro_bundle):
    bundle = Bundle.open(micro_bundle)
    engine = GatedEngine(bundle)
    service = CompletionService(
        bundle, engine, ImageLimits(max_bytes=1_000_000),
        ServerLimits(max_concurrent=2, max_queue=1, request_timeout=30, retry_after=3),
    )
    with TestClient(build_app(service, mount_ui=False, api_key=KEY)) as client:
        yield client, engine, service


@pytest.fixture(scope="module")
def phantom(micro_data) -> bytes:
    return (micro_data / read_manifest(micro_data)[2]["image"]).read_bytes()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _post(client, body=None, key: str | None = KEY, **kwargs):
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return client.post("/v1/completions", json=body, headers=headers, **kwargs)


def _openai(client) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver/v1", api_key=KEY, http_client=client, max_retries=0)


def test_the_openai_client_streams_chunks_that_add_up_to_the_draft(served, phantom):
    client, _, _ = served
    api = _openai(client)
    whole = api.completions.create(model=MODEL, prompt="", max_tokens=12, extra_body={"image": _b64(phantom)})
    chunks = list(api.completions.create(
        model=MODEL, prompt="", max_tokens=12, stream=True, stream_options={"include_usage": True},
        extra_body={"image": _b64(phantom)},
    ))
    first, last = chunks[0], chunks[-1]
    assert first.model_extra["rrg"]["neighbors"] and "not for clinical use" in first.model_extra["rrg"]["disclaimer"]
    assert all(c.object == "text_completion" and c.id == first.id for c in chunks)
    assert "".join(c.text for chunk in chunks for c in chunk.choices) == whole.choices[0].text
    finished = [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason]
    assert finished == [whole.choices[0].finish_reason]
    assert last.choices == [] and last.usage.completion_tokens == whole.usage.completion_tokens
    assert last.usage.prompt_tokens == whole.usage.prompt_tokens


def test_the_raw_stream_is_server_sent_events_ending_with_done(served, phantom):
    client, _, _ = served
    with client.stream("POST", "/v1/completions", headers={"Authorization": f"Bearer {KEY}"},
                       json={"image": _b64(phantom), "max_tokens": 4, "stream": True}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events) and events[-1] == "data: [DONE]"
    first = json.loads(events[0].removeprefix("data: "))
    assert first["choices"][0] == {"index": 0, "text": "", "logprobs": None, "finish_reason": None}
    assert "usage" not in first  # only with stream_options.include_usage


def test_stream_errors_before_the_first_chunk_are_plain_error_responses(served):
    client, _, _ = served
    response = _post(client, {"image": _b64(b"not an image"), "stream": True})
    assert response.status_code == 400 and response.json()["error"]["param"] == "image"


def test_sampling_options_seed_n_and_stop(served, phantom):
    client, _, _ = served
    body = {"image": _b64(phantom), "max_tokens": 10, "temperature": 1.0, "top_p": 0.9, "seed": 7, "n": 2}
    first, again = _post(client, body).json(), _post(client, body).json()
    assert [c["text"] for c in first["choices"]] == [c["text"] for c in again["choices"]]  # same seed, same draws
    greedy = _post(client, {"image": _b64(phantom), "max_tokens": 10}).json()["choices"][0]["text"]
    word = greedy.split()[1] if len(greedy.split()) > 1 else greedy
    stopped = _post(client, {"image": _b64(phantom), "max_tokens": 10, "stop": [word]}).json()["choices"][0]
    assert word not in stopped["text"] and stopped["finish_reason"] == "stop"


def test_api_key_is_required_and_checked(served, phantom):
    client, _, _ = served
    missing = _post(client, {"image": _b64(phantom)}, key=None)
    wrong = _post(client, {"image": _b64(phantom)}, key="sk-wrong")
    assert missing.status_code == wrong.status_code == 401
    assert missing.json()["error"]["type"] == "authentication_error" and "Bearer" in missing.json()["error"]["message"]
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    assert client.get("/v1/models").status_code == 401
    assert client.get("/health").status_code == 200 and client.get("/metrics").status_code == 200  # probes stay open
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url="http://testserver/v1", api_key="sk-wrong", http_client=client,
                      max_retries=0).models.list()


def test_a_full_queue_answers_429_with_retry_after_and_admitted_requests_finish(served, phantom):
    client, engine, service = served
    engine.gate.clear()
    try:
        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(_post, client, {"image": _b64(phantom), "max_tokens": 4}) for _ in range(6)]
            refused = []
            while len(refused) < 3:  # 2 in flight + 1 waiting are admitted; the other 3 are refused at once
                refused = [f for f in futures if f.done()]
            assert service.admission.active == 2 and service.admission.waiting == 1
            metrics = client.get("/metrics").text
            assert "rrg_queue_depth 1.0" in metrics and "rrg_requests_in_flight 2.0" in metrics
            engine.gate.set()
            responses = [f.result() for f in futures]
    finally:
        engine.gate.set()
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 200, 429, 429, 429]
    busy = next(r for r in responses if r.status_code == 429)
    assert busy.headers["Retry-After"] == "3" and busy.json()["error"]["type"] == "rate_limit_error"


def test_a_request_past_the_timeout_is_a_504_and_frees_its_slot(micro_bundle, phantom):
    bundle = Bundle.open(micro_bundle)
    engine = GatedEngine(bundle)
    service = CompletionService(bundle, engine, server_limits=ServerLimits(max_concurrent=1, request_timeout=0.5))
    with TestClient(build_app(service, mount_ui=False)) as client:
        engine.gate.clear()
        try:
            response = client.post("/v1/completions", json={"image": _b64(phantom), "max_tokens": 4})
        finally:
            engine.gate.set()
        assert response.status_code == 504 and "request timeout of 0.5 s" in response.json()["error"]["message"]
        assert service.admission.active == 0
        assert client.post("/v1/completions", json={"image": _b64(phantom), "max_tokens": 4}).status_code == 200


def test_metrics_count_requests_stages_and_tokens(served, phantom):
    client, _, _ = served
    _post(client, {"image": _b64(phantom), "max_tokens": 5})
    _post(client, {"image": "%%%"})
    text = client.get("/metrics").text
    assert 'rrg_requests_total{route="/v1/completions",status="200"}' in text
    assert 'rrg_requests_total{route="/v1/completions",status="400"}' in text
    for stage in ("decode", "vision", "retrieval", "fusion", "generation"):
        count = next(line for line in text.splitlines() if line.startswith(f'rrg_stage_seconds_count{{stage="{stage}"}}'))
        assert float(count.split()[-1]) >= 1, stage
    assert float(next(line for line in text.splitlines() if line.startswith("rrg_generated_tokens_total")).split()[-1]) > 0
    assert "rrg_request_seconds_bucket" in text and "rrg_front_batch_size_bucket" in text


def test_the_front_plans_concurrent_requests_in_one_batch_with_the_same_results(micro_bundle, micro_data):
    drafter = Drafter(Bundle.open(micro_bundle))
    images = [load_image(micro_data / r["image"]).pixels for r in read_manifest(micro_data)[:5]]
    sizes = []
    front = FrontBatcher(drafter, max_batch=4, max_wait=0.5, on_batch=lambda size, timings: sizes.append(size))

    async def plan_all():
        try:
            return await asyncio.gather(*(front.plan(image) for image in images))
        finally:
            await front.close()

    planned = asyncio.run(plan_all())
    assert sizes == [4, 1]
    alone = drafter.plan(images)
    for (plan, timings), single in zip(planned, alone):
        assert [n.id for n in plan.neighbors] == [n.id for n in single.neighbors]
        torch.testing.assert_close(plan.prompt_embeds, single.prompt_embeds, atol=1e-5, rtol=1e-4)
        assert set(timings) == {"vision", "retrieval", "fusion"}


def test_bad_input_matrix_gets_status_and_type_and_health_stays_ok(served, phantom, make_dicom):
    client, _, _ = served
    jpeg_bytes = _jpeg_of(phantom)  # the phantoms are PNGs
    no_pixels = make_dicom(np.zeros((8, 8), dtype=np.float32)).replace(b"\xe0\x7f\x10\x00", b"\xe0\x7f\x11\x00")
    big = b"\0" * (50 * 1024 * 1024)
    image_cases = {
        "corrupt PNG": (phantom[:40] + b"\xff" * 200 + phantom[240:], 400),
        "truncated JPEG": (jpeg_bytes[: len(jpeg_bytes) // 3], 400),
        "text file named .png": (b"Patient notes, not an image.\n", 400),
        "0 bytes": (b"", 400),
        "DICOM without pixel data": (no_pixels, 400),
    }
    for name, (data, status) in image_cases.items():
        response = _post(client, {"image": _b64(data)})
        assert response.status_code == status, (name, response.text)
        assert response.json()["error"]["type"] == "invalid_request_error", name
        assert response.json()["error"]["param"] == "image", name
    requests = {
        "50 MB upload": ({"json": {"image": _b64(big)}}, 413, "invalid_request_error"),
        "malformed JSON": ({"content": b'{"image": "abc', "headers": {"content-type": "application/json"}}, 400,
                           "invalid_request_error"),
        "wrong types": ({"json": {"image": _b64(phantom), "max_tokens": "many"}}, 400, "invalid_request_error"),
        "max_tokens over the context": ({"json": {"image": _b64(phantom), "max_tokens": 1_000_000}}, 400,
                                        "invalid_request_error"),
        "unknown model": ({"json": {"image": _b64(phantom), "model": "gpt-4"}}, 404, "not_found_error"),
    }
    for name, (kwargs, status, kind) in requests.items():
        headers = {"Authorization": f"Bearer {KEY}", **kwargs.pop("headers", {})}
        response = client.post("/v1/completions", headers=headers, **kwargs)
        assert response.status_code == status, (name, response.text[:300])
        assert response.json()["error"]["type"] == kind, name
    for key, code in ((None, "missing_api_key"), ("sk-nope", "invalid_api_key")):
        response = _post(client, {"image": _b64(phantom)}, key=key)
        assert response.status_code == 401 and response.json()["error"]["code"] == code
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert _post(client, {"image": _b64(phantom), "max_tokens": 4}).status_code == 200


def _jpeg_of(png: bytes) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("L").save(buffer, format="JPEG")
    return buffer.getvalue()


# --- the real server under abuse: uvicorn on loopback, one keep-alive connection per test -----------------------


class FaultyEngine(GatedEngine):
    """The real transformers engine, made to fail unexpectedly when the test says so: the error path under
    test does not depend on what fails."""

    def __init__(self, bundle):
        super().__init__(bundle)
        self.fail = False

    async def generate(self, prompt_embeds, settings, n, request_id):
        if self.fail:
            raise RuntimeError("an unexpected fault, with request text that must not be logged")
        return await super().generate(prompt_embeds, settings, n, request_id)

    async def stream(self, prompt_embeds, settings, n, request_id):
        async for deltas in super().stream(prompt_embeds, settings, n, request_id):
            yield deltas
            if self.fail:
                raise RuntimeError("an unexpected fault mid-stream")


READ_TIMEOUT, HEADER_TIMEOUT = 2.0, 1.0


@pytest.fixture(scope="module")
def live(micro_bundle, tmp_path_factory):
    """`rrg serve`'s app and HTTP server (uvicorn with the header deadline) on a loopback port, in a thread;
    the base URL, the engine and the service."""
    from serving.http_server import http_server
    from serving.launch import free_port

    bundle = Bundle.open(micro_bundle)
    engine = FaultyEngine(bundle)
    service = CompletionService(bundle, engine, server_limits=ServerLimits(max_concurrent=4, request_timeout=60))
    port = free_port()
    server = http_server(build_app(service, api_key=KEY, read_timeout=READ_TIMEOUT), "127.0.0.1", port,
                         header_timeout=HEADER_TIMEOUT, log_level="warning")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", engine, service
    server.should_exit = True
    thread.join(60)


@pytest.fixture
def http(live):
    """One keep-alive connection to the live server (httpx, at most one connection, no retries)."""
    url, _, _ = live
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
                      limits=httpx.Limits(max_connections=1, max_keepalive_connections=1)) as client:
        yield client


def _local_port(response: httpx.Response) -> int:
    return response.extensions["network_stream"].get_extra_info("socket").getsockname()[1]


def _valid(phantom: bytes) -> dict:
    return {"image": _b64(phantom), "max_tokens": 4}


def _next_request_reuses_the_connection(http: httpx.Client, previous: httpx.Response, phantom: bytes) -> None:
    assert previous.headers.get("connection", "keep-alive").lower() != "close", previous.headers
    after = http.post("/v1/completions", json=_valid(phantom))  # a dropped connection raises httpx.ReadError here
    assert after.status_code == 200, after.text
    assert _local_port(after) == _local_port(previous), "the server closed the keep-alive connection"


def _error_of(response: httpx.Response) -> dict:
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)  # a whole, well-formed answer
    return response.json()["error"]


def test_after_an_unexpected_500_the_same_connection_serves_the_next_request(live, http, phantom, caplog):
    _, engine, _ = live
    caplog.set_level(logging.INFO, logger="rrg.serving")
    engine.fail = True
    try:
        failed = http.post("/v1/completions", json=_valid(phantom))
    finally:
        engine.fail = False
    assert failed.status_code == 500
    error = _error_of(failed)
    assert error["type"] == "server_error" and "keeps serving" in error["message"]
    assert '"exception": "RuntimeError"' in caplog.text and '"status": 500' in caplog.text
    assert "must not be logged" not in caplog.text and "Traceback" not in caplog.text  # the type, never the message
    _next_request_reuses_the_connection(http, failed, phantom)
    assert 'rrg_requests_total{route="/v1/completions",status="500"}' in http.get("/metrics").text


def test_an_error_mid_stream_ends_the_stream_with_an_error_event_and_the_connection_lives(live, http, phantom):
    _, engine, _ = live
    engine.fail = True
    try:
        with http.stream("POST", "/v1/completions", json={**_valid(phantom), "stream": True}) as response:
            events = [line.removeprefix("data: ") for line in response.iter_lines() if line]
    finally:
        engine.fail = False
    assert response.status_code == 200 and events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["type"] == "server_error"
    _next_request_reuses_the_connection(http, response, phantom)


@pytest.mark.parametrize(("field", "value"), [
    ("seed", 2**64), ("seed", -(2**63) - 1), ("stop", [""]), ("stop", ""), ("stop", ["a", "b", "c", "d", "e"]),
    ("stop", ["x" * 300]), ("n", 9), ("n", 2.0), ("max_tokens", 0), ("max_tokens", "many"), ("min_tokens", 50),
    ("temperature", 2.5), ("top_p", 0), ("stream", "yes"), ("stream_options", {"include_usage": True, "x": 1}),
    ("prompt", 7), ("prompt", ["a"] * 17), ("model", "m" * 300), ("unknown_field", 1),
    ("logprobs", 2), ("echo", True), ("suffix", "!"), ("best_of", 2), ("presence_penalty", 0.5),
])
def test_every_bad_field_is_a_400_naming_it_and_the_connection_lives(http, phantom, field, value):
    response = http.post("/v1/completions", json={**_valid(phantom), field: value})
    assert response.status_code == 400, response.text
    error = _error_of(response)
    assert error["type"] == "invalid_request_error" and error["param"].split(".")[0] == field, error
    assert error["message"].startswith(field)
    if field in ("logprobs", "echo", "suffix", "best_of", "presence_penalty"):
        assert f"rrg does not support {field}" in error["message"]
    _next_request_reuses_the_connection(http, response, phantom)


@pytest.mark.parametrize("raw", [
    b'{"image": "AAAA", "temperature": NaN}', b'{"image": "AAAA", "max_tokens": ' + b"9" * 5000 + b"}",
    b'{"image": "AAAA", "n": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", b'{"image": "AAAA"', b"\xff\xfe not JSON",
])
def test_bodies_that_are_not_sound_json_are_400s_and_the_connection_lives(http, phantom, raw):
    response = http.post("/v1/completions", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400 and _error_of(response)["type"] == "invalid_request_error"
    _next_request_reuses_the_connection(http, response, phantom)


def test_the_int64_seed_bounds_are_accepted(http, phantom):
    for seed in (2**63 - 1, -(2**63)):
        response = http.post("/v1/completions", json={**_valid(phantom), "seed": seed, "temperature": 1.0})
        assert response.status_code == 200, response.text


def _stage_count(http: httpx.Client, stage: str) -> float:
    text = http.get("/metrics").text
    return float(next(line for line in text.splitlines()
                      if line.startswith(f'rrg_stage_seconds_count{{stage="{stage}"}}')).split()[-1])


def test_a_prompt_too_long_is_refused_before_the_image_is_decoded_or_the_front_runs(http, phantom):
    decoded, planned = _stage_count(http, "decode"), _stage_count(http, "vision")
    huge = http.post("/v1/completions", json={**_valid(phantom), "prompt": "lung " * 800_000})  # 4 MB
    assert huge.status_code == 400 and _error_of(huge)["param"] == "prompt"
    assert "8192 characters" in huge.json()["error"]["message"]
    # Under the character cap but over the micro model's 512-token context: counted, not embedded.
    wordy = http.post("/v1/completions", json={**_valid(phantom), "prompt": "opacity " * 1000, "max_tokens": 64})
    assert wordy.status_code == 400 and _error_of(wordy)["param"] == "prompt"
    assert "context of 512 tokens" in wordy.json()["error"]["message"]
    assert (_stage_count(http, "decode"), _stage_count(http, "vision")) == (decoded, planned)
    _next_request_reuses_the_connection(http, wordy, phantom)


def _constant_png(width: int, height: int, mode: str = "RGB") -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, (width, height), (90, 90, 90) if mode == "RGB" else 90).save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_image_beyond_what_a_chest_radiograph_needs_is_a_413_and_a_large_one_drafts(http, phantom):
    wide = _constant_png(16384, 3050)  # ~150 KB on the wire, 50 Mpx of RGB once decoded
    refused = http.post("/v1/completions", json={**_valid(phantom), "image": _b64(wide)})
    assert refused.status_code == 413, refused.text
    assert _error_of(refused)["param"] == "image" and "pixels" in refused.json()["error"]["message"]
    _next_request_reuses_the_connection(http, refused, phantom)
    large = http.post("/v1/completions", json={**_valid(phantom), "image": _b64(_constant_png(4300, 4300))})
    assert large.status_code == 200, large.text


def test_a_dicom_whose_pixel_data_claims_more_bytes_than_it_holds_is_refused(http, phantom, make_dicom):
    dicom = make_dicom(np.full((16, 16), 0.5, dtype=np.float32))
    tag = dicom.index(b"\xe0\x7f\x10\x00")  # (7FE0,0010) PixelData, explicit VR: tag, "OW", 2 reserved, length
    claims_2gb = dicom[: tag + 8] + (2**31 - 2).to_bytes(4, "little") + dicom[tag + 12:]
    response = http.post("/v1/completions", json={**_valid(phantom), "image": _b64(claims_2gb)})
    assert response.status_code == 400 and _error_of(response)["param"] == "image", response.text
    assert "truncated" in response.json()["error"]["message"]
    _next_request_reuses_the_connection(http, response, phantom)


def test_the_page_routes_that_store_or_serve_files_are_refused(http, phantom):
    upload = http.post("/gradio_api/upload", files={"files": ("x.dcm", b"DICM patient data")})
    assert upload.status_code == 404
    served = http.get("/gradio_api/file=/etc/hostname")
    assert served.status_code == 404
    _next_request_reuses_the_connection(http, served, phantom)


def _raw_exchange(url: str, request: bytes, wait: float) -> bytes:
    """Send `request` on a new socket, then read until the server closes it (or `wait` seconds pass)."""
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as connection:
        connection.sendall(request)
        received = b""
        try:
            while chunk := connection.recv(65536):
                received += chunk
        except TimeoutError:
            return received + b"<still open>"
    return received


def test_a_body_that_never_arrives_is_a_408_and_the_connection_closes(live):
    url, _, _ = live
    started = time.monotonic()
    answer = _raw_exchange(url, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
                           + b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"image\": ",
                           wait=READ_TIMEOUT + 20)
    assert answer.startswith(b"HTTP/1.1 408") and b"connection: close" in answer.lower(), answer[:300]
    assert b"<still open>" not in answer and time.monotonic() - started < READ_TIMEOUT + 20


def test_headers_that_never_end_are_a_408_and_the_connection_closes(live):
    url, _, _ = live
    answer = _raw_exchange(url, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ", wait=HEADER_TIMEOUT + 20)
    assert answer.startswith(b"HTTP/1.1 408") and b"connection: close" in answer.lower(), answer[:300]
    silent = _raw_exchange(url, b"", wait=HEADER_TIMEOUT + 20)  # connects and says nothing
    assert silent.startswith(b"HTTP/1.1 408")


def test_a_stream_says_it_is_a_machine_draft_in_its_first_and_last_chunks(http, phantom):
    for include_usage in (False, True):
        body = {**_valid(phantom), "stream": True, "stream_options": {"include_usage": include_usage}}
        with http.stream("POST", "/v1/completions", json=body) as response:
            events = [json.loads(line.removeprefix("data: ")) for line in response.iter_lines()
                      if line and line != "data: [DONE]"]
        first, last = events[0], events[-1]
        assert "not for clinical use" in first["rrg"]["disclaimer"] and first["rrg"]["neighbors"]
        assert last["rrg"] == {"disclaimer": first["rrg"]["disclaimer"]}
        assert ("usage" in last) == include_usage
        assert sum(1 for event in events if "rrg" in event) == 2
