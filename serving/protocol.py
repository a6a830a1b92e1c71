"""The wire format: OpenAI's completions request and response, plus rrg's `image` and `rrg` fields.

Clients send the X-ray through the OpenAI client's `extra_body={"image": ...}`; the response is a
standard completion object with an `rrg` object beside `choices` (DESIGN.md section 8).
"""

from __future__ import annotations

import time
import uuid
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


class StreamOptions(BaseModel):
    """OpenAI's stream_options: include_usage adds a last chunk with the token counts."""

    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class CompletionRequest(BaseModel):
    """POST /v1/completions. Fields OpenAI defines that rrg does not use are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    # The instruction to the model; empty or absent means the bundle's own instruction.
    prompt: str | list[str] | None = None
    max_tokens: int = Field(128, ge=1)
    min_tokens: int = Field(0, ge=0, description="vLLM's extension: no end of text before this many tokens")
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=8)
    image: str = Field(..., description="the X-ray: base64 or a data URL of PNG, JPEG or DICOM bytes")

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

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
    """One server-sent event of a streamed completion, in OpenAI's chunk format; the first carries `rrg`,
    and with stream_options.include_usage a last one with no choices carries `usage`."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionStreamChoice]
    usage: Usage | None = None
    rrg: RrgInfo | None = None


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
             413: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable",
             504: "timeout_error"}

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}  # e.g. Retry-After on a 429 or 503

    def body(self) -> dict:
        kind = self.TYPES.get(self.status, "server_error")
        return ErrorResponse(error=ErrorDetail(message=self.message, type=kind, param=self.param, code=self.code)).model_dump()
