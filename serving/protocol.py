"""The wire format: OpenAI's completions request and response, plus rrg's `image` and `rrg` fields.

Clients send the X-ray through the OpenAI client's `extra_body={"image": ...}`; the response is a
standard completion object with an `rrg` object beside `choices` (DESIGN.md section 8).

Every field a client sends is checked here, before any work starts, and a bad one is a 400 that
names it: ranges that the engines accept (a seed is a signed 64-bit integer, as in OpenAI's API),
at most 4 non-empty stop strings, a bounded prompt. Unknown fields are refused, as OpenAI's API
refuses them, and OpenAI fields that rrg does not implement (`logprobs`, `echo`, `suffix`,
`best_of`, penalties, `logit_bias`) are refused with a message saying so rather than ignored.

Errors are OpenAI's error object (`ErrorResponse`) and the kinds of error the handlers raise
(`InvalidRequest`, `ModelNotFound`, `ServerBusy`, `EngineUnavailable`, ...): each says what went wrong
and knows its OpenAI error `type`; which HTTP status each kind is, is the HTTP layer's business
(`serving.errors.HTTP_STATUS`).
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic_core import PydanticCustomError

SEED_RANGE = (-(2**63), 2**63 - 1)  # OpenAI's seed is an int64; vLLM and torch take this range
MAX_STOP_STRINGS = 4  # as OpenAI's API
MAX_STOP_CHARS = 256
# The instruction is a sentence or two; a longer one would only crowd the prompt. The cap holds the
# tokenizer's work (and the shared front's) to milliseconds before the context check can refuse it.
MAX_PROMPT_CHARS = 8192
MAX_PROMPTS = 16
MAX_TOKENS_CAP = 1 << 20  # far above any context; the context check refuses what does not fit

# OpenAI's completions fields that rrg does not implement, and the value that means "not asked for".
UNSUPPORTED_FIELDS: dict[str, Any] = {
    "logprobs": None, "echo": False, "suffix": None, "best_of": None, "logit_bias": None,
    "presence_penalty": 0, "frequency_penalty": 0,
}

StopString = Annotated[str, StringConstraints(min_length=1, max_length=MAX_STOP_CHARS)]


class StreamOptions(BaseModel):
    """OpenAI's stream_options: include_usage adds a last chunk with the token counts."""

    model_config = ConfigDict(extra="forbid", strict=True)

    include_usage: bool = False
    include_obfuscation: bool = False  # OpenAI's padding of streamed events; nothing to hide here, so ignored


class CompletionRequest(BaseModel):
    """POST /v1/completions: OpenAI's fields that rrg implements, vLLM's `min_tokens`, and `image`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = Field(None, max_length=256)
    # The instruction to the model; empty or absent means the bundle's own instruction.
    prompt: str | list[str] | None = None
    max_tokens: int = Field(128, ge=1, le=MAX_TOKENS_CAP)
    min_tokens: int = Field(0, ge=0, le=MAX_TOKENS_CAP,
                            description="vLLM's extension: no end of text before this many tokens")
    temperature: float = Field(0.0, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    stop: list[StopString] | None = None  # a single string is taken as a list of one (`_stop_list`)
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=8)
    user: str | None = Field(None, max_length=256, description="OpenAI's end-user id; accepted, not used or logged")
    image: str = Field(..., description="the X-ray: base64 or a data URL of PNG, JPEG or DICOM bytes")
    # Declared so that a client asking for them hears that rrg does not do them (see `_unsupported`).
    logprobs: Any = None
    echo: Any = False
    suffix: Any = None
    best_of: Any = None
    logit_bias: Any = None
    presence_penalty: Any = 0
    frequency_penalty: Any = 0

    @field_validator(*UNSUPPORTED_FIELDS)
    @classmethod
    def _unsupported(cls, value: Any, info) -> Any:
        if value is not None and value != UNSUPPORTED_FIELDS[info.field_name]:
            raise PydanticCustomError(
                "unsupported", "rrg does not support {field}; leave it out (or at its default)",
                {"field": info.field_name},
            )
        return value

    @field_validator("prompt")
    @classmethod
    def _bounded_prompt(cls, prompt: str | list[str] | None) -> str | list[str] | None:
        texts = [prompt] if isinstance(prompt, str) else prompt or []
        if len(texts) > MAX_PROMPTS:
            raise PydanticCustomError("too_many_prompts", "at most {limit} prompts", {"limit": MAX_PROMPTS})
        if sum(len(text) for text in texts) > MAX_PROMPT_CHARS:
            raise PydanticCustomError("prompt_too_long", "the prompt is longer than {limit} characters",
                                      {"limit": MAX_PROMPT_CHARS})
        return prompt

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, stop: Any) -> Any:
        return [stop] if isinstance(stop, str) else stop

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, stop: list[str] | None) -> list[str] | None:
        if stop is not None and len(stop) > MAX_STOP_STRINGS:
            raise PydanticCustomError("too_many_stops", "at most {limit} stop strings", {"limit": MAX_STOP_STRINGS})
        return stop

    @field_validator("min_tokens")
    @classmethod
    def _min_within_max(cls, min_tokens: int, info) -> int:
        max_tokens = info.data.get("max_tokens")
        if max_tokens is not None and min_tokens > max_tokens:
            raise PydanticCustomError("min_over_max", "min_tokens ({min}) must not exceed max_tokens ({max})",
                                      {"min": min_tokens, "max": max_tokens})
        return min_tokens

    def stop_strings(self) -> tuple[str, ...]:
        return tuple(self.stop or ())

    def instruction(self) -> str | None:
        """The prompt as one instruction, or None for the bundle's default."""
        prompt = self.prompt if isinstance(self.prompt, str) or self.prompt is None else " ".join(self.prompt)
        return (prompt or "").strip() or None


class NeighborOut(BaseModel):
    id: str
    report: str
    distance: float


class ClueOut(BaseModel):
    """A disease clue the model selected (TRRG), and where on the image it looked."""

    label: str  # the CheXbert label of its template
    text: str  # "Clue: <severity> <disease> at <location>"
    weight: float  # its share of the clue weights softmax(v . c) over the 14 clues
    attention: list[list[float]]  # over the model's patch grid (rows top to bottom), summing to 1


class RrgInfo(BaseModel):
    """What the draft leaned on, and what every reader of it must be told."""

    neighbors: list[NeighborOut]
    findings: dict[str, float]  # probability per CheXbert label
    suggested_findings: list[str]  # the findings named in the prompt (above the bundle's thresholds)
    clues: list[ClueOut] = Field(default_factory=list)  # empty for a bundle without disease clues
    disclaimer: str


class RrgNotice(BaseModel):
    """The `rrg` object of a stream's last chunk: what the reader of the draft must be told, again."""

    disclaimer: str


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: None = None
    finish_reason: Literal["stop", "length"]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: f"cmpl-{uuid.uuid4().hex}")
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    rrg: RrgInfo


class CompletionStreamChoice(BaseModel):
    index: int
    text: str
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None = None


class CompletionStreamResponse(BaseModel):
    """One server-sent event of a streamed completion, in OpenAI's chunk format. The first carries `rrg`;
    the last carries `rrg` with the disclaimer alone: the chunk that finishes the draft, or after it a
    chunk with no choices (with `usage` when stream_options.include_usage asks for it)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionStreamChoice]
    usage: Usage | None = None
    rrg: RrgInfo | RrgNotice | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "rrg"
    root: str
    parent: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class APIError(Exception):
    """An error the client is told about, as OpenAI's error object. Raise one of the kinds below, which
    say what went wrong; each knows its OpenAI error `type`, and `serving.errors.HTTP_STATUS` (the HTTP
    layer) knows its status, so the handlers that raise them know nothing of HTTP."""

    type: ClassVar[str] = "server_error"
    retry_after: int | None = None  # seconds a client should wait before it tries again, where that helps

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code

    def body(self) -> dict:
        """`{"error": {"message", "type", "param", "code"}}`, as OpenAI's API answers."""
        return ErrorResponse(error=ErrorDetail(message=self.message, type=self.type, param=self.param,
                                               code=self.code)).model_dump()


class InvalidRequest(APIError):
    """A request that cannot be served as sent: a bad field, image or body; `param` names the field."""

    type = "invalid_request_error"


class AuthenticationFailed(APIError):
    """No API key, or the wrong one, where the server requires one."""

    type = "authentication_error"


class NotFound(APIError):
    """Nothing is served at this address."""

    type = "not_found_error"


class ModelNotFound(NotFound):
    """A model this server does not serve."""

    def __init__(self, model: str, served: tuple[str, ...]):
        super().__init__(f"The model '{model}' does not exist; this server serves {' and '.join(served)}",
                         param="model", code="model_not_found")


class MethodNotAllowed(APIError):
    """A route asked with a method it does not answer (GET /v1/completions)."""

    type = "invalid_request_error"


class RequestTimeout(APIError):
    """The client did not send its request in time."""

    type = "timeout_error"

    def __init__(self, message: str):
        super().__init__(message, code="request_timeout")


class PayloadTooLarge(APIError):
    """A body or an image over the server's limits."""

    type = "invalid_request_error"


class ServerBusy(APIError):
    """Every slot and queue place is taken; the client should retry after `retry_after` seconds."""

    type = "rate_limit_error"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message, code="server_busy")
        self.retry_after = retry_after


INTERNAL_ERROR = "Internal error; the server keeps serving."


class InternalError(APIError):
    """A failure nobody expected; its message says only that the server goes on (the cause is logged)."""

    type = "server_error"

    def __init__(self, message: str = INTERNAL_ERROR):
        super().__init__(message)


class EngineUnavailable(APIError):
    """The engine cannot generate now (not started, dead, or its vLLM server unreachable)."""

    type = "service_unavailable"

    def __init__(self, reason: str, retry_after: int = 5):
        super().__init__(f"The engine is not available: {reason}")
        self.retry_after = retry_after


class DraftTimeout(APIError):
    """The draft did not finish within the server's request timeout."""

    type = "timeout_error"

    def __init__(self, seconds: float):
        super().__init__(f"The draft took longer than the server's request timeout of {seconds:g} s.", code="timeout")
