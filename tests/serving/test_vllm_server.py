"""End to end through vLLM: `rrg serve --engine vllm` with a tiny bundle on loopback, called with the
official OpenAI client and with Gradio's client, as users call it."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from prompts.vocabulary import CHEXBERT_LABELS
from rrg.bundle import Bundle
from rrg.data.imaging import load_image
from rrg.data.manifest import read_manifest
from rrg.drafting import LocalDrafter
from rrg.model.generation import SamplingSettings
from serving.launch import ServerFailedError, running_server

pytestmark = pytest.mark.slow
REAL_RADIOGRAPH = Path(__file__).resolve().parents[1] / "data" / "nih_cxr14" / "00029548_010.jpg"


@pytest.fixture(scope="module")
def server(micro_bundle, tmp_path_factory):
    """The server's base URL, once vLLM's engine is up; stopped after the module."""
    folder = tmp_path_factory.mktemp("server")
    gradio_files = folder / "gradio"
    try:
        with running_server(micro_bundle, "vllm", folder / "server.log", env={"GRADIO_TEMP_DIR": str(gradio_files)}) as url:
            yield url, gradio_files
    except ServerFailedError as error:
        pytest.fail(str(error))


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)


def _images(micro_data, count: int) -> list[Path]:
    return [micro_data / record["image"] for record in read_manifest(micro_data) if record["split"] == "test"][:count]


def test_openai_client_drafts_a_phantom_and_a_real_radiograph_through_vllm(server, micro_data):
    url, _ = server
    client = _client(url)
    assert client.models.retrieve("test-micro-lora").id == "test-micro-lora"
    for path in (_images(micro_data, 1)[0], REAL_RADIOGRAPH):
        completion = client.completions.create(
            model="test-micro-lora", prompt="", max_tokens=24, temperature=0,
            extra_body={"image": base64.b64encode(path.read_bytes()).decode()},
        )
        choice = completion.choices[0]
        assert isinstance(choice.text, str) and choice.finish_reason in ("stop", "length")
        assert completion.usage.completion_tokens <= 24 and completion.usage.prompt_tokens > 0
        rrg = completion.model_extra["rrg"]
        assert rrg["neighbors"] and {"id", "report", "distance"} <= set(rrg["neighbors"][0])
        assert len(rrg["findings"]) == 14 and "not for clinical use" in rrg["disclaimer"]


def test_vllm_and_transformers_give_the_same_greedy_drafts(server, micro_bundle, micro_data):
    url, _ = server
    client = _client(url)
    paths = _images(micro_data, 6)
    # min_tokens keeps the micro model from ending at once, so there are tokens to compare.
    local = LocalDrafter(Bundle.open(micro_bundle)).draft(
        [load_image(p).pixels for p in paths], SamplingSettings(max_tokens=24, min_tokens=16)
    )
    served = [
        client.completions.create(
            model="test-micro-lora", prompt="", max_tokens=24, temperature=0,
            extra_body={"image": base64.b64encode(p.read_bytes()).decode(), "min_tokens": 16},
        )
        for p in paths
    ]
    assert all(completion.usage.completion_tokens >= 16 for completion in served)
    assert [completion.choices[0].text for completion in served] == [draft.text for draft in local]


_LABEL_NAMES = {name.lower() for name in CHEXBERT_LABELS}


def test_gradio_page_drafts_an_uploaded_phantom_and_keeps_no_copy(server, micro_data):
    from gradio_client import Client

    url, gradio_files = server
    page = httpx.get(f"{url}/config", timeout=30).text
    assert "not for clinical use" in page and "phantom" in page
    upload = _images(micro_data, 1)[0]
    image = upload.read_bytes()
    data_url = f"data:image/png;base64,{base64.b64encode(image).decode()}"  # as the page's browser sends it
    client = Client(url, verbose=False)
    preview, draft, findings, neighbors, suggested, clues = client.predict(data_url, api_name="/draft")
    assert preview.startswith('<img src="data:image/png;base64,')  # the decoded image inline, not a file
    assert isinstance(draft, str)
    assert clues == ""  # the micro bundle has no disease clues (tests/rrg/training/test_fused_bundle.py has them)
    assert suggested == "none" or all(name.strip() in _LABEL_NAMES for name in suggested.split(","))
    assert len(findings["confidences"]) >= 1
    assert neighbors["data"] and len(neighbors["data"][0]) == 3
    encoded = base64.b64encode(image)
    kept = [p for p in gradio_files.rglob("*") if p.is_file() and (image in p.read_bytes() or encoded in p.read_bytes())]
    assert not kept, f"the server kept the uploaded image: {kept}"


def test_gradio_page_says_plainly_when_a_file_is_not_an_image(server):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    url, _ = server
    not_an_image = f"data:image/png;base64,{base64.b64encode(b'this is not an X-ray').decode()}"
    with pytest.raises(AppError, match="not a PNG, JPEG or DICOM"):
        Client(url, verbose=False).predict(not_an_image, api_name="/draft")
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200


def test_vllm_streams_deltas_that_add_up_to_the_whole_draft(server, micro_data):
    url, _ = server
    client = _client(url)
    image = base64.b64encode(_images(micro_data, 1)[0].read_bytes()).decode()
    body = {"image": image, "min_tokens": 12}
    whole = client.completions.create(model="test-micro-lora", prompt="", max_tokens=16, temperature=0, extra_body=body)
    chunks = list(client.completions.create(
        model="test-micro-lora", prompt="", max_tokens=16, temperature=0, stream=True,
        stream_options={"include_usage": True}, extra_body=body,
    ))
    texts = [c.text for chunk in chunks for c in chunk.choices if c.text]
    assert len(texts) > 1  # vLLM's deltas arrive as they are generated, not as one piece
    assert "".join(texts).strip() == whole.choices[0].text
    assert chunks[0].model_extra["rrg"]["neighbors"]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_logs_never_carry_dicom_patient_tags_or_report_text(server, micro_data, make_dicom):
    url, gradio_files = server
    client = _client(url)
    pixels = load_image(_images(micro_data, 1)[0]).pixels
    name, patient = "Quixote^Rocinante", "PID-7731-UNIQUE"
    dicom = make_dicom(pixels, patient_name=name, patient_id=patient)
    no_pixels = dicom.replace(b"\xe0\x7f\x10\x00", b"\xe0\x7f\x11\x00")
    drafted = client.completions.create(model="test-micro-lora", prompt="", max_tokens=12, temperature=0,
                                        extra_body={"image": base64.b64encode(dicom).decode(), "min_tokens": 6})
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="test-micro-lora", prompt="", max_tokens=12,
                                  extra_body={"image": base64.b64encode(no_pixels).decode()})
    log_text = (gradio_files.parent / "server.log").read_text()
    assert '"event": "draft"' in log_text and '"event": "error"' in log_text  # the requests were logged
    texts = [drafted.choices[0].text, drafted.model_extra["rrg"]["neighbors"][0]["report"]]
    assert all(len(text) > 8 for text in texts)
    for secret in (name, "Quixote", "Rocinante", patient, *texts):
        assert secret not in log_text


@pytest.fixture(scope="module")
def remote_front(micro_bundle, tmp_path_factory):
    """vLLM's own OpenAI server with the micro bundle's model and adapter, and `rrg serve --engine remote`
    in front of it; the front's URL."""
    from serving.engines import vllm_serve_command
    from serving.launch import free_port, server_process, wait_until_healthy

    folder = tmp_path_factory.mktemp("remote")
    port = free_port()
    command = vllm_serve_command(Bundle.open(micro_bundle), port=port, cpu=True, python=sys.executable)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
    with (folder / "vllm.log").open("w") as log:
        vllm = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_until_healthy(vllm, f"http://127.0.0.1:{port}", folder / "vllm.log", 420)
        with server_process(micro_bundle, "remote", folder / "front.log",
                            options=["--engine-url", f"http://127.0.0.1:{port}"]) as (url, _):
            yield url
    except ServerFailedError as error:
        pytest.fail(str(error))
    finally:
        os.killpg(vllm.pid, signal.SIGINT)
        try:
            vllm.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(vllm.pid, signal.SIGKILL)


def test_remote_engine_drafts_through_vllms_own_server_as_the_in_process_engine(server, remote_front, micro_data):
    """vLLM's own server applies the adapter as a LoRARequest; the in-process engine here serves it
    merged into the weights (the CPU default): the greedy drafts agree."""
    url, _ = server
    assert httpx.get(f"{url}/health", timeout=10).json()["lora"] == "merged"
    in_process, remote = _client(url), _client(remote_front)
    assert remote.models.retrieve("test-micro-lora").id == "test-micro-lora"
    for path in _images(micro_data, 4):
        body = {"image": base64.b64encode(path.read_bytes()).decode(), "min_tokens": 12}
        here = in_process.completions.create(model="test-micro-lora", prompt="", max_tokens=16, temperature=0,
                                             extra_body=body)
        there = remote.completions.create(model="test-micro-lora", prompt="", max_tokens=16, temperature=0,
                                          extra_body=body)
        assert there.choices[0].text == here.choices[0].text
        assert there.usage == here.usage
        assert there.model_extra["rrg"]["neighbors"] == here.model_extra["rrg"]["neighbors"]
    chunks = list(remote.completions.create(model="test-micro-lora", prompt="", max_tokens=16, temperature=0,
                                            stream=True, extra_body=body))
    assert "".join(c.text for chunk in chunks for c in chunk.choices).strip() == there.choices[0].text
    assert httpx.get(f"{remote_front}/health", timeout=10).json()["engine"] == "remote"
