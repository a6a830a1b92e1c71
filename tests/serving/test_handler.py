"""The handler and the HTTP layer apart: `CompletionService` returns protocol values and raises kinds
of error, without HTTP; one table gives every kind its status; the serving modules import no cycle."""

from __future__ import annotations

import ast
import asyncio
import base64
from pathlib import Path

import pytest

from rrg.bundle import Bundle
from rrg.data.manifest import read_manifest
from serving import protocol
from serving.completions import CompletionService, CompletionStream
from serving.engines import HfEngine
from serving.errors import HTTP_STATUS, headers_of, status_of
from serving.protocol import (
    APIError,
    CompletionRequest,
    CompletionResponse,
    CompletionStreamResponse,
    InvalidRequest,
    ModelNotFound,
    RequestTimeout,
    RrgInfo,
    RrgNotice,
    ServerBusy,
)

SERVING = Path(__file__).resolve().parents[2] / "serving"


def _kinds(kind: type[APIError] = APIError) -> set[type[APIError]]:
    """Every kind of error below `kind`."""
    found = set()
    for sub in kind.__subclasses__():
        found |= {sub} | _kinds(sub)
    return found


def test_every_error_kind_has_its_status_in_the_one_table():
    kinds = {k for k in _kinds() if k.__module__ == protocol.__name__}
    assert kinds <= set(HTTP_STATUS), kinds - set(HTTP_STATUS)
    assert {kind.__name__: status_of(kind) for kind in kinds} == {
        "InvalidRequest": 400, "AuthenticationFailed": 401, "NotFound": 404, "ModelNotFound": 404,
        "MethodNotAllowed": 405, "RequestTimeout": 408, "PayloadTooLarge": 413, "ServerBusy": 429,
        "InternalError": 500, "EngineUnavailable": 503, "DraftTimeout": 504,
    }
    busy = ServerBusy("The server is busy.", retry_after=3)
    assert busy.body() == {"error": {"message": "The server is busy.", "type": "rate_limit_error", "param": None,
                                     "code": "server_busy"}}
    assert headers_of(busy) == {"Retry-After": "3"}
    assert headers_of(RequestTimeout("late")) == {"Connection": "close"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _serving_module(name: str) -> Path | None:
    relative = Path(*name.split(".")[1:])
    for path in (SERVING / relative.with_suffix(".py"), SERVING / relative / "__init__.py"):
        if path.is_file():
            return path
    return None


def test_the_handler_imports_no_web_framework():
    """serving.completions, and every serving module it imports, know nothing of fastapi or starlette."""
    seen, waiting = set(), [SERVING / "completions.py"]
    while waiting:
        path = waiting.pop()
        if path in seen:
            continue
        seen.add(path)
        imported = _imports(path)
        web = {name for name in imported if name.split(".")[0] in ("fastapi", "starlette", "gradio")}
        assert not web, f"{path.relative_to(SERVING.parent)} imports {web}"
        waiting += [p for name in imported if name.startswith("serving.") and (p := _serving_module(name))]
    assert SERVING / "engines" / "base.py" in seen and SERVING / "protocol.py" in seen


def test_no_serving_module_imports_one_that_imports_it_back():
    imports = {path: {p for name in _imports(path) if name.startswith("serving.") and (p := _serving_module(name))}
               for path in SERVING.rglob("*.py")}

    def reachable(start: Path) -> set[Path]:
        seen, waiting = set(), list(imports[start])
        while waiting:
            path = waiting.pop()
            if path not in seen:
                seen.add(path)
                waiting += imports.get(path, ())
        return seen

    cycles = sorted(str(path.relative_to(SERVING)) for path in imports if path in reachable(path))
    assert not cycles, f"modules in an import cycle: {cycles}"


@pytest.fixture(scope="module")
def phantom(micro_data) -> str:
    return base64.b64encode((micro_data / read_manifest(micro_data)[2]["image"]).read_bytes()).decode()


def test_the_handler_returns_protocol_values_and_raises_kinds_of_error(micro_bundle, phantom):
    bundle = Bundle.open(micro_bundle)
    service = CompletionService(bundle, HfEngine(bundle))

    async def run():
        await service.engine.start()
        try:
            whole = await service.complete(CompletionRequest(image=phantom, max_tokens=4))
            stream = await service.complete(CompletionRequest(image=phantom, max_tokens=4, stream=True))
            assert isinstance(stream, CompletionStream) and service.admission.active == 1  # held while it streams
            chunks = [chunk async for chunk in stream]
            busy_after_stream = service.admission.active
            abandoned = await service.complete(CompletionRequest(image=phantom, max_tokens=4, stream=True))
            first = await anext(aiter(abandoned))
            await abandoned.aclose()  # a client that went away after the first chunk
            never_read = await service.complete(CompletionRequest(image=phantom, max_tokens=4, stream=True))
            await never_read.aclose()
            errors = []
            for request in (CompletionRequest(image=phantom, model="gpt-4"), CompletionRequest(image="%%%")):
                try:
                    await service.complete(request)
                except APIError as error:
                    errors.append(error)
            return whole, stream, chunks, busy_after_stream, first, errors
        finally:
            await service.close()
            await service.engine.shutdown()

    whole, stream, chunks, busy_after_stream, first, errors = asyncio.run(run())
    assert isinstance(whole, CompletionResponse) and whole.choices[0].finish_reason in ("stop", "length")
    assert all(isinstance(chunk, CompletionStreamResponse) for chunk in chunks), chunks
    assert isinstance(chunks[0].rrg, RrgInfo) and isinstance(chunks[-1].rrg, RrgNotice)
    assert "".join(c.text for chunk in chunks for c in chunk.choices) == whole.choices[0].text
    assert all(chunk.id == f"cmpl-{stream.request_id}" for chunk in chunks)
    assert isinstance(first, CompletionStreamResponse)
    assert busy_after_stream == 0 and service.admission.active == 0  # every stream gave its slot back
    assert [type(error) for error in errors] == [ModelNotFound, InvalidRequest]
    assert errors[0].param == "model" and errors[1].param == "image"
