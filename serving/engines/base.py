"""What every engine is: the `Engine` protocol, what it says about itself (`EngineInfo`), the pieces of
a streamed draft (`Delta`) and the one error an engine raises (`EngineError`). No engine lives here,
so each engine module imports this one and none imports another's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import torch

from rrg.bundle import Bundle
from rrg.model.generation import Generation, SamplingSettings


class EngineError(RuntimeError):
    """The engine cannot serve (not started, or dead)."""


@dataclass(frozen=True)
class EngineInfo:
    """What /v1/models and /health say about the engine."""

    kind: str
    base_model: str  # the served base model's name
    lora_name: str  # the bundle's adapter, as requests name it
    max_model_len: int  # prompt plus completion tokens
    lora: str  # how the adapter is applied: "adapter" (a LoRARequest per request) or "merged" into the weights


@dataclass(frozen=True)
class Delta:
    """New text of one choice of a streamed draft; `finish_reason` on its last delta."""

    index: int
    text: str
    tokens: int  # tokens this delta adds
    finish_reason: str | None = None


class Engine(Protocol):
    """Prompt embeddings in, drafts out (whole, or as they are generated)."""

    info: EngineInfo

    async def start(self) -> None: ...

    async def generate(
        self, prompt_embeds: torch.Tensor, settings: SamplingSettings, n: int, request_id: str
    ) -> list[Generation]: ...

    def stream(
        self, prompt_embeds: torch.Tensor, settings: SamplingSettings, n: int, request_id: str
    ) -> AsyncIterator[list[Delta]]: ...

    async def check_health(self) -> None: ...

    async def shutdown(self) -> None: ...


def engine_info(kind: str, bundle: Bundle, lora: str) -> EngineInfo:
    return EngineInfo(kind, bundle.config.name, bundle.lora_name(), bundle.config.generator.max_positions, lora)
