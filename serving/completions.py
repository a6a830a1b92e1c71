"""The completions handler: an image in, a draft with what it leaned on out, for the API and the UI.

Untrusted input is checked here, before any model runs: the image (base64 or data URL of PNG, JPEG
or DICOM, through `rrg.imaging`), the model name, and `max_tokens` against the model's context.
Logs carry request ids, sizes and timings only: never report text, image bytes or DICOM tags.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass

import numpy as np

from rrg.bundle import Bundle
from rrg.drafting import Drafter, DraftPlan, disclaimer
from rrg.generator import Generation, SamplingSettings
from rrg.imaging import DecodedImage, ImageError, ImageLimits, ImageTooLargeError, decode_image
from serving.engine import Engine
from serving.protocol import (
    APIError,
    ClueOut,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    NeighborOut,
    RrgInfo,
    Usage,
)

log = logging.getLogger("rrg.serving")


@dataclass
class DraftResult:
    """Everything a draft request produced, before it is put on the wire."""

    request_id: str
    image: DecodedImage
    plan: DraftPlan
    generations: list[Generation]
    timings: dict[str, float]

    @property
    def prompt_tokens(self) -> int:
        return len(self.plan.prompt_embeds)

    @property
    def completion_tokens(self) -> int:
        return sum(len(g.token_ids) for g in self.generations)


def image_bytes(field: str, limits: ImageLimits) -> bytes:
    """The bytes of the request's `image`: base64, or a data URL whose payload is base64."""
    payload = field.strip()
    if payload.startswith("data:"):
        header, comma, payload = payload.partition(",")
        if not comma or not header.endswith(";base64"):
            raise APIError(400, "image: a data URL must be 'data:<type>;base64,<data>'", param="image")
    payload = "".join(payload.split())
    # Refuse an oversize upload before decoding it: 4 base64 characters carry 3 bytes.
    if len(payload) // 4 * 3 > limits.max_bytes + 3:
        raise APIError(413, f"image: the upload is larger than the limit of {limits.max_bytes:,} bytes", param="image")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, "image: not valid base64 (send the file's bytes base64-encoded, or a data URL)",
                       param="image") from None


class CompletionService:
    """The model behind the API and the UI: the bundle's front (vision, retrieval, prompt) and an engine."""

    def __init__(self, bundle: Bundle, engine: Engine, limits: ImageLimits | None = None):
        self.bundle = bundle
        self.engine = engine
        self.limits = limits or ImageLimits()
        self.drafter = Drafter(bundle)
        self.notice = disclaimer(bundle)
        self.has_clues = bundle.config.clues.enabled
        self.model_names = (engine.info.lora_name, engine.info.base_model)
        self._front = threading.Lock()  # the front's torch modules serve one batch at a time

    def decode(self, data: bytes) -> DecodedImage:
        """Image bytes to pixels; a bad image is a 400 (413 when too large) saying what is wrong."""
        try:
            return decode_image(data, self.limits)
        except ImageTooLargeError as error:
            raise APIError(413, f"image: {error}", param="image") from None
        except ImageError as error:
            raise APIError(400, f"image: {error}", param="image") from None

    def _plan(self, pixels: np.ndarray, instruction: str | None) -> DraftPlan:
        with self._front:
            return self.drafter.plan([pixels], instruction)[0]

    async def draft(
        self, data: bytes, settings: SamplingSettings, n: int = 1, instruction: str | None = None,
        request_id: str | None = None,
    ) -> DraftResult:
        """Decode, plan and generate; APIError for anything the caller must fix."""
        request_id = request_id or uuid.uuid4().hex[:16]
        timings, started = {}, time.perf_counter()
        image = await asyncio.to_thread(self.decode, data)
        timings["decode"] = time.perf_counter() - started
        mark = time.perf_counter()
        plan = await asyncio.to_thread(self._plan, image.pixels, instruction)
        timings["front"] = time.perf_counter() - mark  # vision, retrieval, projector, prompt
        prompt_tokens = len(plan.prompt_embeds)
        room = self.engine.info.max_model_len - prompt_tokens
        if settings.max_tokens > room:
            raise APIError(
                400,
                f"max_tokens is {settings.max_tokens}, but the model's context of {self.engine.info.max_model_len} "
                f"tokens leaves {room} after this prompt of {prompt_tokens} tokens",
                param="max_tokens",
            )
        mark = time.perf_counter()
        generations = await self.engine.generate(plan.prompt_embeds, settings, n, request_id)
        timings["generation"] = time.perf_counter() - mark
        timings["total"] = time.perf_counter() - started
        result = DraftResult(request_id, image, plan, generations, timings)
        log.info(json.dumps({
            "event": "draft", "request_id": request_id, "engine": self.engine.info.kind,
            "image_bytes": len(data), "image_format": image.source_format, "image_size": list(image.original_size),
            "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "seconds": {k: round(v, 4) for k, v in timings.items()},
        }))
        return result

    def check_model(self, model: str | None) -> str:
        """The served name a request asked for (default: the adapter); 404 for any other."""
        if model is None or model == "":
            return self.engine.info.lora_name
        if model not in self.model_names:
            raise APIError(404, f"The model '{model}' does not exist; this server serves "
                                f"{' and '.join(self.model_names)}", param="model", code="model_not_found")
        return model

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        """POST /v1/completions."""
        model = self.check_model(request.model)
        if request.stream:
            raise APIError(400, "stream=true is not supported yet; send stream=false", param="stream")
        if request.min_tokens > request.max_tokens:
            raise APIError(400, f"min_tokens ({request.min_tokens}) must not exceed max_tokens ({request.max_tokens})",
                           param="min_tokens")
        settings = SamplingSettings(
            max_tokens=request.max_tokens, min_tokens=request.min_tokens, temperature=request.temperature, top_p=request.top_p,
            seed=request.seed, stop=request.stop_strings(),
        )
        data = await asyncio.to_thread(image_bytes, request.image, self.limits)
        result = await self.draft(data, settings, request.n, request.instruction())
        return CompletionResponse(
            id=f"cmpl-{result.request_id}",
            model=model,
            choices=[
                CompletionChoice(index=i, text=g.text, finish_reason=g.finish_reason)
                for i, g in enumerate(result.generations)
            ],
            usage=Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                        total_tokens=result.prompt_tokens + result.completion_tokens),
            rrg=self.rrg_info(result.plan),
        )

    def rrg_info(self, plan: DraftPlan) -> RrgInfo:
        """The `rrg` object: neighbours, findings, clues and the disclaimer."""
        return RrgInfo(
            neighbors=[NeighborOut(id=n.id, report=n.report, distance=round(n.distance, 6)) for n in plan.neighbors],
            findings=plan.findings,
            suggested_findings=plan.suggested,
            clues=[ClueOut(label=c.label, text=c.text, weight=c.weight, attention=c.attention) for c in plan.clues],
            disclaimer=self.notice,
        )
