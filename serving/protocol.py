"""The wire format: OpenAI's completions request and response, plus rrg's `image` and `rrg` fields.

Clients send the X-ray through the OpenAI client's `extra_body={"image": ...}`; the response is a
standard completion object with an `rrg` object beside `choices` (DESIGN.md section 8).

Every field a client sends is checked here, before any work starts, and a bad one is a 400 that
names it: ranges that the engines accept (a seed is a signed 64-bit integer, as in OpenAI's API),
at most 4 non-empty stop strings, a bounded prompt. Unknown fields are refused, as OpenAI's API
refuses them, and OpenAI fields that rrg does not implement (`logprobs`, `echo`, `suffix`,
`best_of`, penalties, `logit_bias`) are refused with a message saying so rather than ignored.
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
    """An error the client caused or must be told about, as an OpenAI error object with a status."""

    TYPES: ClassVar[dict[int, str]] = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
             408: "timeout_error", 413: "invalid_request_error", 429: "rate_limit_error",
             503: "service_unavailable", 504: "timeout_error"}

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}  # e.g. Retry-After on a 429 or 503

    @property
    def kind(self) -> str:
        """OpenAI's error type for the status."""
        return self.TYPES.get(self.status, "server_error")

    def body(self) -> dict:
        return ErrorResponse(error=ErrorDetail(message=self.message, type=self.kind, param=self.param,
                                               code=self.code)).model_dump()
