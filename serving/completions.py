"""The completions handler: an image in, a draft with what it leaned on out, for the API and the UI.

It returns values and raises errors that say what went wrong (`serving.protocol`), as vLLM's
`serving_completion` does; it knows nothing of HTTP. `complete()` returns a `CompletionResponse`, or
for `stream: true` a `CompletionStream` of protocol chunks that the router (`serving.router`) writes
as server-sent events; which status an error is, is decided there (`serving.errors.HTTP_STATUS`).

Untrusted input is checked here, before any model runs (the fields' own ranges are checked by
`serving.protocol`): the model name, the instruction's length in tokens against the model's context
(before the image is decoded or the shared front sees it), the image (base64 or data URL of PNG,
JPEG or DICOM, through `rrg.data.imaging`), and `max_tokens` against the context once the prompt is
built. Images are decoded by a small pool of threads, shrunk while decoding to the drafter's
`decode_side`: `rrg.data.imaging`'s limits bound one decode's memory and the pool bounds how many run at
once. Every draft, from the API or the page, takes a slot (`serving.limits`: `ServerBusy` when slots
and queue are full, `DraftTimeout` past the request timeout), goes through the front in micro-batches
with other requests (`serving.front`), then to the engine. A stream's checks, decoding and front run
before `complete()` returns, so their errors are raised like any other; a failure after that is the
stream's last item, an error object; its first chunk and its last carry the disclaimer. Logs carry
request ids, sizes and stage timings only: never report text, image bytes or DICOM tags.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from rrg.bundle import Bundle
from rrg.data.imaging import DecodedImage, ImageError, ImageLimits, ImageTooLargeError, decode_image
from rrg.drafting import Drafter, DraftPlan, disclaimer
from rrg.model.generation import Generation, SamplingSettings
from serving.engines import Engine, EngineError
from serving.front import FrontBatcher
from serving.limits import Admission, ServerLimits
from serving.metrics import ServerMetrics
from serving.protocol import (
    APIError,
    ClueOut,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    CompletionStreamChoice,
    CompletionStreamResponse,
    DraftTimeout,
    EngineUnavailable,
    InternalError,
    InvalidRequest,
    ModelCard,
    ModelList,
    ModelNotFound,
    NeighborOut,
    PayloadTooLarge,
    RrgInfo,
    RrgNotice,
    Usage,
)

log = logging.getLogger("rrg.serving")

# Threads decoding uploads at once: each holds at most one image's raster (rrg.data.imaging's limits).
DECODE_WORKERS = min(4, os.cpu_count() or 1)


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
            raise InvalidRequest("image: a data URL must be 'data:<type>;base64,<data>'", param="image")
    payload = "".join(payload.split())
    # Refuse an oversize upload before decoding it: 4 base64 characters carry 3 bytes.
    if len(payload) // 4 * 3 > limits.max_bytes + 3:
        raise PayloadTooLarge(f"image: the upload is larger than the limit of {limits.max_bytes:,} bytes",
                              param="image")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("image: not valid base64 (send the file's bytes base64-encoded, or a data URL)",
                             param="image") from None


@dataclass
class Prepared:
    """A request past every check, its slot held, ready for the engine."""

    request_id: str
    image: DecodedImage
    plan: DraftPlan
    timings: dict[str, float]
    started: float
    image_bytes: int


class CompletionStream:
    """A streamed completion as values: iterate it for its `CompletionStreamResponse` chunks; a failure
    after the first chunk comes as its last item, an `APIError`, since no error can be raised to the
    client any more. The request's slot is released when the chunks end, or by `aclose()` when the
    reader gives up early (a client that went away)."""

    def __init__(self, request_id: str, chunks: AsyncGenerator[CompletionStreamResponse | APIError, None],
                 release: Callable[[], None]):
        self.request_id = request_id
        self._chunks = chunks
        self._release = release

    def __aiter__(self) -> AsyncIterator[CompletionStreamResponse | APIError]:
        return self._chunks

    async def aclose(self) -> None:
        """Stop generating and free the slot; safe to call more than once, and on a stream never read."""
        await self._chunks.aclose()
        self._release()  # a generator never started has no `finally` of its own to run


def _once(release: Callable[[], None]) -> Callable[[], None]:
    """`release`, made safe to call again: a stream's slot may be freed by its end and by `aclose()`."""
    done = False

    def release_once() -> None:
        nonlocal done
        if not done:
            done = True
            release()

    return release_once


class CompletionService:
    """The model behind the API and the UI: the bundle's front (vision, retrieval, prompt) and an engine."""

    def __init__(
        self, bundle: Bundle, engine: Engine, limits: ImageLimits | None = None,
        server_limits: ServerLimits | None = None, metrics: ServerMetrics | None = None,
        front_batch: int = 8, front_wait: float = 0.005, decode_workers: int = DECODE_WORKERS,
    ):
        self.bundle = bundle
        self.engine = engine
        self.limits = limits or ImageLimits()
        self.server_limits = server_limits or ServerLimits()
        self.metrics = metrics or ServerMetrics()
        self.drafter = Drafter(bundle)
        self.front = FrontBatcher(self.drafter, front_batch, front_wait, on_batch=self._observe_batch)
        self.admission = Admission(self.server_limits)
        self.metrics.in_flight.set_function(lambda: self.admission.active)
        self.metrics.queue_depth.set_function(lambda: self.admission.waiting)
        self.notice = disclaimer(bundle)
        self.has_clues = bundle.config.clues.enabled
        self.model_names = (engine.info.lora_name, engine.info.base_model)
        self.decoder = ThreadPoolExecutor(decode_workers, thread_name_prefix="rrg-decode")

    async def close(self) -> None:
        """Stop the front's batcher and the decoding threads (the app's shutdown)."""
        await self.front.close()
        self.decoder.shutdown(wait=False, cancel_futures=True)

    def _observe_batch(self, size: int, timings: dict[str, float]) -> None:
        self.metrics.front_batch.observe(size)

    def decode(self, data: bytes) -> DecodedImage:
        """Image bytes to pixels; InvalidRequest (PayloadTooLarge when too large) saying what is wrong."""
        try:
            return decode_image(data, self.limits, longest_side=self.drafter.decode_side)
        except ImageTooLargeError as error:
            raise PayloadTooLarge(f"image: {error}", param="image") from None
        except ImageError as error:
            raise InvalidRequest(f"image: {error}", param="image") from None

    async def _prepare(self, data: bytes, settings: SamplingSettings, instruction: str | None,
                       request_id: str) -> Prepared:
        started = time.perf_counter()
        image = await asyncio.get_running_loop().run_in_executor(self.decoder, self.decode, data)
        timings = {"decode": time.perf_counter() - started}
        plan, front = await self.front.plan(image.pixels, instruction)
        timings |= front  # vision, retrieval, fusion of the micro-batch it ran in
        prompt_tokens = len(plan.prompt_embeds)
        room = self.engine.info.max_model_len - prompt_tokens
        if settings.max_tokens > room:
            raise InvalidRequest(
                f"max_tokens is {settings.max_tokens}, but the model's context of {self.engine.info.max_model_len} "
                f"tokens leaves {room} after this prompt of {prompt_tokens} tokens",
                param="max_tokens",
            )
        return Prepared(request_id, image, plan, timings, started, len(data))

    def _timeout(self) -> DraftTimeout:
        return DraftTimeout(self.server_limits.request_timeout)

    def _record(self, prepared: Prepared, completion_tokens: int, stream: bool) -> None:
        """The draft's log line and metrics: ids, sizes, token counts and stage timings, no content."""
        timings = prepared.timings | {"total": time.perf_counter() - prepared.started}
        self.metrics.observe_stages(timings)
        self.metrics.prompt_tokens.inc(len(prepared.plan.prompt_embeds))
        self.metrics.generated_tokens.inc(completion_tokens)
        log.info(json.dumps({
            "event": "draft", "request_id": prepared.request_id, "engine": self.engine.info.kind, "stream": stream,
            "image_bytes": prepared.image_bytes, "image_format": prepared.image.source_format,
            "image_size": list(prepared.image.original_size), "prompt_tokens": len(prepared.plan.prompt_embeds),
            "completion_tokens": completion_tokens, "seconds": {k: round(v, 4) for k, v in timings.items()},
        }))

    async def draft(
        self, data: bytes, settings: SamplingSettings, n: int = 1, instruction: str | None = None,
        request_id: str | None = None,
    ) -> DraftResult:
        """Decode, plan and generate, within a slot and the request timeout; an APIError for what the
        caller must fix or retry (a bad image, a busy server, a timeout, an engine that is down)."""
        request_id = request_id or uuid.uuid4().hex[:16]
        async with self.admission.slot():
            try:
                async with asyncio.timeout(self.server_limits.request_timeout):
                    prepared = await self._prepare(data, settings, instruction, request_id)
                    mark = time.perf_counter()
                    generations = await self.engine.generate(prepared.plan.prompt_embeds, settings, n, request_id)
                    prepared.timings["generation"] = time.perf_counter() - mark
            except TimeoutError:
                raise self._timeout() from None
            except EngineError as error:
                raise EngineUnavailable(str(error)) from error
        result = DraftResult(request_id, prepared.image, prepared.plan, generations, prepared.timings)
        self._record(prepared, result.completion_tokens, stream=False)
        return result

    def check_model(self, model: str | None) -> str:
        """The served name a request asked for (default: the adapter); ModelNotFound for any other."""
        if model is None or model == "":
            return self.engine.info.lora_name
        if model not in self.model_names:
            raise ModelNotFound(model, self.model_names)
        return model

    def models(self) -> ModelList:
        """GET /v1/models: the base model and its LoRA adapter, as vLLM lists them."""
        info = self.engine.info
        return ModelList(data=[
            ModelCard(id=info.base_model, root=str(self.bundle.llm_path)),
            ModelCard(id=info.lora_name, root=str(self.bundle.lora_path), parent=info.base_model),
        ])

    def model(self, model_id: str) -> ModelCard:
        """GET /v1/models/{id}; ModelNotFound for a model not served here."""
        self.check_model(model_id)
        return next(card for card in self.models().data if card.id == model_id)

    def check_instruction(self, instruction: str | None, max_tokens: int) -> None:
        """InvalidRequest for an instruction that cannot fit in the context with max_tokens, before any work
        on the image: the full prompt (image tokens, findings, references) is checked once it is built."""
        if instruction is None:
            return
        tokens = self.drafter.embedder.count_tokens(instruction)
        context = self.engine.info.max_model_len
        if tokens + max_tokens >= context:
            raise InvalidRequest(f"The prompt is {tokens} tokens; with max_tokens {max_tokens} it cannot fit in "
                                 f"the model's context of {context} tokens with the image and its references.",
                                 param="prompt")

    def _settings(self, request: CompletionRequest) -> SamplingSettings:
        return SamplingSettings(
            max_tokens=request.max_tokens, min_tokens=request.min_tokens, temperature=request.temperature,
            top_p=request.top_p, seed=request.seed, stop=request.stop_strings(),
        )

    async def complete(self, request: CompletionRequest) -> CompletionResponse | CompletionStream:
        """POST /v1/completions: the whole completion, or (`stream: true`) its chunks as they come."""
        model = self.check_model(request.model)
        settings = self._settings(request)
        self.check_instruction(request.instruction(), settings.max_tokens)
        data = await asyncio.to_thread(image_bytes, request.image, self.limits)
        if request.stream:
            return await self._stream(request, model, settings, data)
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

    async def _stream(self, request: CompletionRequest, model: str, settings: SamplingSettings,
                      data: bytes) -> CompletionStream:
        """Checks, decoding and the front run here, before the stream exists, so their errors are raised
        as any request's; then the stream yields the first chunk (with `rrg`), the engine's deltas,
        optional usage."""
        request_id = uuid.uuid4().hex[:16]
        # The slot outlives this call: the stream releases it when it ends or is closed.
        await self.admission.acquire()
        release = _once(self.admission.release)
        try:
            async with asyncio.timeout(self.server_limits.request_timeout):
                prepared = await self._prepare(data, settings, request.instruction(), request_id)
        except TimeoutError:
            release()
            raise self._timeout() from None
        except BaseException:
            release()
            raise
        deadline = prepared.started + self.server_limits.request_timeout
        include_usage = bool(request.stream_options and request.stream_options.include_usage)

        async def chunks() -> AsyncGenerator[CompletionStreamResponse | APIError, None]:
            chunk_id, tokens, unfinished = f"cmpl-{request_id}", 0, set(range(request.n))
            notice = RrgNotice(disclaimer=self.notice)
            try:
                yield CompletionStreamResponse(
                    id=chunk_id, model=model, rrg=self.rrg_info(prepared.plan),
                    choices=[CompletionStreamChoice(index=i, text="") for i in range(request.n)],
                )
                mark = time.perf_counter()
                last_has_notice = False
                async with asyncio.timeout(max(0.0, deadline - time.perf_counter())):
                    async for deltas in self.engine.stream(prepared.plan.prompt_embeds, settings, request.n, request_id):
                        tokens += sum(d.tokens for d in deltas)
                        unfinished -= {d.index for d in deltas if d.finish_reason is not None}
                        last_has_notice = not unfinished and not include_usage  # the draft's last chunk
                        yield CompletionStreamResponse(id=chunk_id, model=model, choices=[
                            CompletionStreamChoice(index=d.index, text=d.text, finish_reason=d.finish_reason)
                            for d in deltas
                        ], rrg=notice if last_has_notice else None)
                prepared.timings["generation"] = time.perf_counter() - mark
                if include_usage or not last_has_notice:
                    prompt_tokens = len(prepared.plan.prompt_embeds)
                    usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=tokens,
                                  total_tokens=prompt_tokens + tokens) if include_usage else None
                    yield CompletionStreamResponse(id=chunk_id, model=model, choices=[], usage=usage, rrg=notice)
                self._record(prepared, tokens, stream=True)
            except TimeoutError:
                yield self._timeout()
            except EngineError as error:
                yield EngineUnavailable(str(error))
            except Exception as error:  # noqa: BLE001 - the stream has begun: its last item says it failed
                log.error(json.dumps({"event": "unexpected_error", "request_id": request_id,
                                      "exception": type(error).__name__, "response_started": True}))
                yield InternalError()
            finally:
                release()

        return CompletionStream(request_id, chunks(), release)

    def rrg_info(self, plan: DraftPlan) -> RrgInfo:
        """The `rrg` object: neighbours, findings, clues and the disclaimer."""
        return RrgInfo(
            neighbors=[NeighborOut(id=n.id, report=n.report, distance=round(n.distance, 6)) for n in plan.neighbors],
            findings=plan.findings,
            suggested_findings=plan.suggested,
            clues=[ClueOut(label=c.label, text=c.text, weight=c.weight, attention=c.attention) for c in plan.clues],
            disclaimer=self.notice,
        )
