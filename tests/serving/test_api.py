"""The OpenAI-compatible API on the transformers engine, in process: drafts, and clear 4xx errors
for every kind of bad input, after which the server keeps serving."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from fastapi.testclient import TestClient

from rrg.bundle import Bundle
from rrg.data.imaging import ImageLimits, load_image
from rrg.data.manifest import read_manifest
from rrg.drafting import LocalDrafter
from rrg.model.generation import SamplingSettings
from serving.app import build_app
from serving.completions import CompletionService
from serving.engines import HfEngine


@pytest.fixture(scope="module")
def client(micro_bundle):
    bundle = Bundle.open(micro_bundle)
    # A small byte limit, so that a "huge" upload is cheap to build.
    service = CompletionService(bundle, HfEngine(bundle), ImageLimits(max_bytes=200_000))
    with TestClient(build_app(service, mount_ui=False)) as client:
        yield client


@pytest.fixture(scope="module")
def phantom(micro_data) -> bytes:
    return (micro_data / read_manifest(micro_data)[2]["image"]).read_bytes()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _complete(client, **body):
    return client.post("/v1/completions", json={"model": "test-micro-lora", "prompt": "", "max_tokens": 16, **body})


def test_completion_is_an_openai_object_with_the_rrg_fields(client, phantom, micro_bundle, micro_data):
    response = _complete(client, image=_b64(phantom))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "text_completion" and body["model"] == "test-micro-lora"
    assert body["id"].startswith("cmpl-") and len(body["choices"]) == 1
    choice = body["choices"][0]
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    rrg = body["rrg"]
    assert len(rrg["neighbors"]) == 1 and set(rrg["neighbors"][0]) == {"id", "report", "distance"}
    assert len(rrg["findings"]) == 14 and all(0.0 <= p <= 1.0 for p in rrg["findings"].values())
    assert set(rrg["suggested_findings"]) <= {name.lower() for name in rrg["findings"]}
    assert "not for clinical use" in rrg["disclaimer"] and "phantom" in rrg["disclaimer"]
    # The API drafts exactly what `rrg generate` drafts from the same bundle (greedy).
    local = LocalDrafter(Bundle.open(micro_bundle)).draft([load_image(micro_data / read_manifest(micro_data)[2]["image"]).pixels],
                                                         SamplingSettings(max_tokens=16))[0]
    assert choice["text"] == local.text


def test_data_url_dicom_and_n_are_accepted(client, phantom, micro_data, make_dicom):
    pixels = load_image(micro_data / read_manifest(micro_data)[2]["image"]).pixels
    dicom = make_dicom(pixels)
    by_png = _complete(client, image=f"data:image/png;base64,{_b64(phantom)}").json()
    by_dicom = _complete(client, image=f"data:application/dicom;base64,{_b64(dicom)}", n=2).json()
    assert len(by_png["choices"]) == 1
    assert len(by_dicom["choices"]) == 2 and [c["index"] for c in by_dicom["choices"]] == [0, 1]
    # Greedy decoding: both choices are the same draft.
    assert by_dicom["choices"][0]["text"] == by_dicom["choices"][1]["text"]


@pytest.mark.parametrize(
    ("body", "status", "param", "words"),
    [
        ({"image": "%%% not base64 %%%"}, 400, "image", "base64"),
        ({"image": _b64(b"just some text, not an X-ray")}, 400, "image", "not a PNG, JPEG or DICOM"),
        ({"image": _b64(b"")}, 400, "image", "empty"),
        ({"image": "data:image/png,rawbytes"}, 400, "image", "data URL"),
        ({}, 400, "image", "image is required"),
        ({"max_tokens": 0}, 400, "max_tokens", "greater than or equal to 1"),
        ({"max_tokens": 100_000}, 400, "max_tokens", "context"),
        ({"temperature": 9}, 400, "temperature", "less than or equal to 2"),
        ({"n": 0}, 400, "n", "greater than or equal to 1"),
        ({"min_tokens": 20, "max_tokens": 10}, 400, "min_tokens", "must not exceed"),
        ({"model": "gpt-4"}, 404, "model", "does not exist"),
    ],
)
def test_bad_requests_get_openai_errors(client, phantom, body, status, param, words):
    request = {"image": _b64(phantom), **body}
    if not body:
        del request["image"]
    response = _complete(client, **request)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and words in error["message"]
    assert error["type"] in ("invalid_request_error", "not_found_error")


def test_bad_images_of_every_kind_are_4xx_and_the_server_keeps_serving(client, phantom, make_dicom, patch_png_size):
    no_pixels = make_dicom(np.zeros((8, 8), dtype=np.float32)).replace(b"\xe0\x7f\x10\x00", b"\xe0\x7f\x11\x00")
    cases = {
        "truncated": (phantom[: len(phantom) // 2], 400),
        "huge header": (patch_png_size(phantom, 60_000, 60_000), 413),
        # Over the image limit (200,000 bytes) but inside the body limit: the image check answers.
        "too many bytes": (phantom + b"\0" * (200_500 - len(phantom)), 413),
        "DICOM without pixels": (no_pixels, 400),
    }
    for name, (data, status) in cases.items():
        response = _complete(client, image=_b64(data))
        assert response.status_code == status, (name, response.text)
        assert response.json()["error"]["param"] == "image", name
    assert _complete(client, image=_b64(phantom)).status_code == 200


def test_malformed_json_is_a_400_error_object(client):
    response = client.post("/v1/completions", content=b'{"model": "x", "image": ', headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "The request body is not valid JSON."


def test_models_list_the_base_and_its_lora_adapter(client):
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    cards = {card["id"]: card for card in models["data"]}
    assert set(cards) == {"test-micro", "test-micro-lora"}
    assert cards["test-micro-lora"]["parent"] == "test-micro"
    assert client.get("/v1/models/test-micro-lora").json()["id"] == "test-micro-lora"
    assert client.get("/v1/models/gpt-4").status_code == 404


def test_health_reports_the_engine(client):
    response = client.get("/health")
    assert response.status_code == 200 and response.json()["engine"] == "hf"
    assert response.json()["lora"] == "merged"  # transformers generates with the adapter merged in


def test_rrg_serve_refuses_a_folder_that_is_not_a_bundle(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "rrg.cli", "serve", "--bundle", str(tmp_path)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2
    assert "is not a complete rrg bundle" in result.stderr
