"""Request and response models of the HTTP API (pydantic; they make the OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# strict: "yes" is not true, "3" is not 3 (a JSON integer is still a valid float)
STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
LENIENT = ConfigDict(extra="ignore", allow_inf_nan=False, strict=True)  # OpenAI clients send fields we do not use
Text = Field(min_length=1, max_length=200_000)


#: a temperature above 0 but below this samples as greedy: dividing logits by less overflows them
MIN_TEMPERATURE = 1e-6


def _tiny_temperature_is_greedy(value: float | None) -> float | None:
    return 0.0 if value is not None and 0 < value < MIN_TEMPERATURE else value


def _lone_surrogate(value: Any, depth: int = 0) -> bool:
    """Whether a JSON value holds a string with a lone surrogate (``"\\ud800"``), which is no text."""
    if isinstance(value, str):
        return not value.isascii() and any("\ud800" <= ch <= "\udfff" for ch in value)
    if depth > 32:
        return False
    if isinstance(value, dict):
        return any(_lone_surrogate(k, depth + 1) or _lone_surrogate(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return any(_lone_surrogate(v, depth + 1) for v in value)
    return False


class Sampling(BaseModel):
    model_config = STRICT

    max_new_tokens: int | None = Field(None, ge=1, le=1_000_000, description="Default: the server's.")
    temperature: float | None = Field(None, ge=0, le=100, description="0 (the default): greedy.")
    top_k: int | None = Field(None, ge=0, le=1_000_000, description="0: off.")
    top_p: float | None = Field(None, gt=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0, le=100)
    stop: list[str] | None = Field(None, max_length=16, description="Stop strings (not included in the text).")
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    hide_thought: bool = False
    stream: bool = Field(False, description="Server-Sent Events: `delta` events, then `done` (or `error`).")
    adapter: str | None = Field(None, max_length=200, description="A LoRA adapter the server loaded (see /v1/status).")

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, value: float | None) -> float | None:
        return _tiny_temperature_is_greedy(value)

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not s or len(s) > 200 for s in value):
            raise ValueError("each stop string must have 1 to 200 characters")
        return value

    def sampling(self) -> dict[str, Any]:
        return self.model_dump(
            include={
                "max_new_tokens",
                "temperature",
                "top_k",
                "top_p",
                "repetition_penalty",
                "stop",
                "seed",
                "hide_thought",
            },
            exclude_none=True,
        )


class GenerateRequest(Sampling):
    prompt: str = Text


class ChatRequest(Sampling):
    message: str = Text
    session_id: str | None = Field(None, max_length=64, description="Omit to start a new session.")
    system: str | None = Field(None, max_length=20_000, description="System prompt of a new session.")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class GenerateResponse(BaseModel):
    text: str
    finish_reason: str
    usage: Usage
    model: str
    adapter: str | None = None


class ChatResponse(GenerateResponse):
    session_id: str
    message_id: int | None = Field(description="The reply's id (None only when the session was deleted meanwhile).")


class SessionCreate(BaseModel):
    model_config = STRICT

    system: str | None = Field(None, max_length=20_000)
    adapter: str | None = Field(None, max_length=200)
    title: str | None = Field(None, max_length=200)


class Message(BaseModel):
    id: int
    role: str
    content: str
    created: float
    finish_reason: str | None = None


class Session(BaseModel):
    id: str
    created: float
    updated: float
    system: str | None = None
    adapter: str | None = None
    title: str | None = None
    messages: list[Message] = []


class DocumentIn(BaseModel):
    model_config = STRICT

    text: str = Text
    title: str | None = Field(None, max_length=200)


class ToolResultIn(BaseModel):
    model_config = STRICT

    text: str = Text
    tool: str | None = Field(None, max_length=200)


class FactIn(BaseModel):
    model_config = STRICT

    text: str = Field(min_length=1, max_length=2_000)


class MemoryItem(BaseModel):
    id: int
    kind: str
    title: str | None = None
    trusted: bool
    content: str
    original_tokens: int
    stored_tokens: int
    created: float
    chunks: int


class MemoryStored(BaseModel):
    id: int
    kind: str
    chunks: int
    trusted: bool
    tokens: int | None = None
    original_tokens: int | None = None
    stored_tokens: int | None = None
    tokens_saved: int | None = None
    condensed: str | None = None


class MemoryList(BaseModel):
    session_id: str
    items: list[MemoryItem]


class RatingIn(BaseModel):
    model_config = STRICT

    rating: int = Field(ge=-1, le=5, description="-1/1 (thumbs) or 1-5 (stars); 0 is neutral.")
    session_id: str | None = Field(None, max_length=64)
    message_id: int | None = Field(None, ge=0, le=2**62)
    comment: str | None = Field(None, max_length=5_000)


class PreferenceIn(BaseModel):
    model_config = STRICT

    prompt: str = Text
    chosen: str = Text
    rejected: str = Text
    session_id: str | None = Field(None, max_length=64)


class ReportIn(BaseModel):
    model_config = STRICT

    category: Literal["harmful", "incorrect", "privacy", "offensive", "bug", "other"]
    text: str = Field(min_length=1, max_length=20_000)
    session_id: str | None = Field(None, max_length=64)
    message_id: int | None = Field(None, ge=0, le=2**62)


class Stored(BaseModel):
    id: int | str
    status: str = "stored"


class IntakeRecord(BaseModel):
    model_config = STRICT

    instruction: str = Field(min_length=1, max_length=50_000)
    input: str | None = Field(None, max_length=50_000)
    output: str = Field(min_length=1, max_length=50_000)
    system: str | None = Field(None, max_length=20_000)
    domain: str = Field("general", min_length=1, max_length=64, description="crm and household_finance are high-risk.")
    consent: bool = Field(description="The person the data comes from agreed to its use for training. Required: true.")
    source: str | None = Field(None, max_length=200)


class IntakeBatch(BaseModel):
    model_config = STRICT

    records: list[IntakeRecord] = Field(min_length=1, max_length=500)


class IntakeResult(BaseModel):
    id: str
    status: Literal["candidate", "quarantine"]
    risk: Literal["normal", "high"]
    domain: str
    redactions: dict[str, int]


class IntakeBatchResult(BaseModel):
    results: list[IntakeResult]


class ApprovalIn(BaseModel):
    model_config = STRICT

    ids: list[str] = Field(min_length=1, max_length=1000)
    decision: Literal["approve", "reject"]
    reviewer: str = Field(min_length=1, max_length=200)
    note: str | None = Field(None, max_length=5_000)
    acknowledge_high_risk: bool = Field(False, description="Needed to approve a quarantined (high-risk) record.")


class ApprovalResult(BaseModel):
    results: list[dict[str, Any]]


# -- OpenAI-compatible --------------------------------------------------------------------------
class OAIContentPart(BaseModel):
    model_config = LENIENT

    type: str = Field(max_length=64)
    text: str | None = Field(None, max_length=200_000)


class OAIMessage(BaseModel):
    model_config = LENIENT

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: (
        Annotated[str, Field(max_length=200_000)] | Annotated[list[OAIContentPart], Field(max_length=256)] | None
    ) = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


class OAIStreamOptions(BaseModel):
    model_config = LENIENT

    include_usage: bool = False


class OAICommon(BaseModel):
    model_config = LENIENT

    model: str = Field(min_length=1, max_length=200)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    max_completion_tokens: int | None = Field(None, ge=1, le=1_000_000)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    n: int = Field(1, ge=1, le=1, description="Only 1 is supported.")
    stream: bool = False
    stream_options: OAIStreamOptions | None = None
    frequency_penalty: float | None = Field(None, ge=-2, le=2)

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        if _lone_surrogate(data):
            raise ValueError("the request holds a lone surrogate (such as \\ud800): text must be valid Unicode")
        return data

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, value: float | None) -> float | None:
        return _tiny_temperature_is_greedy(value)

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        items = [value] if isinstance(value, str) else value or []
        if len(items) > 16 or any(not s or len(s) > 200 for s in items):
            raise ValueError("stop: up to 16 strings of 1 to 200 characters")
        return value

    def sampling(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        tokens = self.max_completion_tokens or self.max_tokens
        if tokens is not None:
            out["max_new_tokens"] = tokens
        for key in ("temperature", "top_p", "seed"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.stop:
            out["stop"] = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        if self.frequency_penalty:
            out["repetition_penalty"] = 1.0 + max(self.frequency_penalty, 0) / 2
        return out


class ChatCompletionRequest(OAICommon):
    messages: list[OAIMessage] = Field(min_length=1, max_length=1000)


class CompletionRequest(OAICommon):
    prompt: str | list[str] = Field(description="A prompt (a list must hold exactly one).")

    @field_validator("prompt")
    @classmethod
    def _one(cls, value: str | list[str]) -> str | list[str]:
        items = [value] if isinstance(value, str) else value
        if len(items) != 1 or not items[0]:
            raise ValueError("prompt must be one non-empty string")
        return value

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]
