"""The emulator's settings: one mutable attrs class, validated on creation and on every change."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

__all__ = ["FAULT_NAMES", "PRESET_EMBEDDINGS", "STREAM_FAULTS", "EmbeddingModel", "EmulatorConfig"]

#: Every fault `EmulatorConfig.faults` may name.
FAULT_NAMES: frozenset[str] = frozenset(
    {
        "http_500",
        "http_502",
        "http_503",
        "http_429",
        "error_1",
        "error_2",
        "error_4",
        "error_15",
        "error_336000",
        "error_336100",
        "drop",
        "slow_first_byte",
        "cut_stream",
        "reset_stream",
        "malformed_line",
        "midstream_error",
        "midstream_error_line",
    }
)

#: Faults that only make sense inside a stream; a non-stream request they fall on is answered
#: normally.
STREAM_FAULTS: frozenset[str] = frozenset(
    {"cut_stream", "reset_stream", "malformed_line", "midstream_error", "midstream_error_line"}
)


def _str_dict(value: Mapping[str, str]) -> dict[str, str]:
    return {str(k): str(v) for k, v in dict(value).items()}


def _str_set(value: Iterable[str]) -> set[str]:
    if isinstance(value, str):
        raise TypeError("expected a collection of strings, not a string")
    return {str(v) for v in value}


def _optional_str_set(value: Iterable[str] | None) -> set[str] | None:
    return None if value is None else _str_set(value)


def _faults(value: Mapping[str, float]) -> dict[str, float]:
    return {str(k): v for k, v in dict(value).items()}


def _fail_prompts(value: Mapping[str, int]) -> dict[str, int]:
    return {str(k): v for k, v in dict(value).items()}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _non_negative(inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if not _is_number(value) or value < 0:  # type: ignore[operator]
        raise ValueError(f"{attr.name} must be a finite number >= 0, got {value!r}")


def _positive_or_none(inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (not _is_number(value) or value <= 0):  # type: ignore[operator]
        raise ValueError(f"{attr.name} must be None or a number > 0, got {value!r}")


def _positive_int(inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if not _is_int(value) or value < 1:  # type: ignore[operator]
        raise ValueError(f"{attr.name} must be an integer >= 1, got {value!r}")


def _positive_int_or_none(inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _positive_int(inst, attr, value)


def _status(inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if not _is_int(value) or not 200 <= value <= 599:  # type: ignore[operator]
        raise ValueError(f"{attr.name} must be an HTTP status (200-599), got {value!r}")


def _check_faults(inst: object, attr: attrs.Attribute[Any], value: dict[str, float]) -> None:
    for name, fraction in value.items():
        if name not in FAULT_NAMES:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(FAULT_NAMES))}")
        if not _is_number(fraction) or not 0 <= fraction <= 1:
            raise ValueError(f"fault {name!r} fraction must be in [0, 1], got {fraction!r}")
    if sum(value.values()) > 1 + 1e-9:
        raise ValueError("fault fractions must add up to at most 1")


def _check_fail_prompts(inst: object, attr: attrs.Attribute[Any], value: dict[str, int]) -> None:
    for prompt, code in value.items():
        if not _is_int(code) or code <= 0:
            raise ValueError(f"fail_prompts[{prompt!r}] must be a positive error code")


def _check_sentences_min(inst: EmulatorConfig, attr: attrs.Attribute[Any], value: int) -> None:
    _positive_int(inst, attr, value)
    if value > inst.sentences_max:
        raise ValueError(f"sentences_min ({value}) must be <= sentences_max")


def _check_sentences_max(inst: EmulatorConfig, attr: attrs.Attribute[Any], value: int) -> None:
    _positive_int(inst, attr, value)
    if value < inst.sentences_min:
        raise ValueError(f"sentences_max ({value}) must be >= sentences_min")


def _non_negative_int(inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if not _is_int(value) or value < 0:  # type: ignore[operator]
        raise ValueError(f"{attr.name} must be an integer >= 0, got {value!r}")


@attrs.frozen(kw_only=True)
class EmbeddingModel:
    """What one embeddings endpoint answers: vector size, and its per-request input limits.

    Defaults are those of `embedding-v1`: 16 texts a request, each at most 1,000 characters
    and 384 tokens. The dimension must be even (the vectors are built two components at a
    time, which keeps them exactly unit-length).
    """

    dimension: int = attrs.field(default=384)
    max_texts: int = attrs.field(default=16)
    max_chars: int = attrs.field(default=1000)
    max_tokens: int = attrs.field(default=384)

    @dimension.validator
    def _check_dimension(self, attr: attrs.Attribute[Any], value: object) -> None:
        if not _is_int(value) or value < 2 or value % 2:  # type: ignore[operator]
            raise ValueError(f"dimension must be an even integer >= 2, got {value!r}")

    @max_texts.validator
    @max_chars.validator
    @max_tokens.validator
    def _check_limit(self, attr: attrs.Attribute[Any], value: object) -> None:
        _positive_int(self, attr, value)


#: The preset embeddings endpoints and their documented limits.
PRESET_EMBEDDINGS: dict[str, EmbeddingModel] = {
    "embedding-v1": EmbeddingModel(),
    "bge_large_zh": EmbeddingModel(dimension=1024, max_chars=2000, max_tokens=512),
    "bge_large_en": EmbeddingModel(dimension=1024, max_chars=2000, max_tokens=512),
    "tao_8k": EmbeddingModel(dimension=1024, max_texts=1, max_chars=28000, max_tokens=8192),
}


def _embedding_model(value: object) -> EmbeddingModel:
    """An `EmbeddingModel` from itself, a dimension, or a mapping of its fields (JSON)."""
    if isinstance(value, EmbeddingModel):
        return value
    if _is_int(value):
        return EmbeddingModel(dimension=value)  # type: ignore[arg-type]
    if isinstance(value, Mapping):
        return EmbeddingModel(**{str(k): v for k, v in value.items()})
    raise TypeError(f"an embeddings endpoint needs a dimension or a mapping, got {value!r}")


def _embedding_models(value: Mapping[str, object]) -> dict[str, EmbeddingModel]:
    return {str(k): _embedding_model(v) for k, v in dict(value).items()}


@attrs.define(kw_only=True)
class EmulatorConfig:
    """Everything the emulator does that a test may want to change.

    Mutable: assign a field (it is converted and validated) or call `Emulator.configure`
    to change several at once. Rate windows, token expiry and signature checks use the
    emulator's clock.
    """

    # --- credentials and tokens (docs/protocol.md §2) ---
    #: OAuth API Key -> Secret Key pairs accepted by /oauth/2.0/token.
    credentials: dict[str, str] = attrs.field(
        factory=lambda: {"test-api-key": "test-secret-key"}, converter=_str_dict
    )
    #: bce-auth-v1 Access Key -> Secret Access Key pairs.
    iam_credentials: dict[str, str] = attrs.field(
        factory=lambda: {"test-access-key": "test-secret-access-key"}, converter=_str_dict
    )
    #: Access tokens that are always valid (never expire, survive `revoke_tokens`).
    static_tokens: set[str] = attrs.field(factory=set, converter=_str_set)
    #: Seconds an issued token lives; the `expires_in` of the token answer.
    token_lifetime: int = attrs.field(default=2592000, validator=_positive_int)
    #: HTTP status of `invalid_client` answers (401, or 200 like the SDK mock).
    oauth_error_status: int = attrs.field(default=401, validator=_status)
    #: Allowed clock skew (seconds) for bce-auth-v1 timestamps in the future.
    iam_skew: float = attrs.field(default=300.0, validator=_non_negative)

    # --- routing ---
    #: Endpoint names served (None: any name). Unknown -> 336005.
    endpoints: set[str] | None = attrs.field(default=None, converter=_optional_str_set)
    #: Endpoint names ("name" or "chat/name") no credentials may call -> 6.
    forbidden_endpoints: set[str] = attrs.field(factory=set, converter=_str_set)

    # --- validation (docs/protocol.md §3) ---
    max_question_chars: int = attrs.field(default=4800, validator=_positive_int)
    max_total_chars: int = attrs.field(default=4800, validator=_positive_int)
    #: Longest `system` of a chat request (longer -> 336104).
    max_system_chars: int = attrs.field(default=1024, validator=_positive_int)
    #: Largest `max_output_tokens` of a chat request (the smallest is 2; outside -> 336003).
    max_output_tokens_limit: int = attrs.field(default=2048, validator=_positive_int)

    # --- embeddings ---
    #: Embeddings endpoint name -> what it answers (an `EmbeddingModel`, or in JSON and
    #: `configure()` a dimension or a mapping of its fields). Replacing the dict drops the
    #: presets unless they are included.
    embedding_endpoints: dict[str, EmbeddingModel] = attrs.field(
        factory=lambda: dict(PRESET_EMBEDDINGS), converter=_embedding_models
    )
    #: What any other name on the embeddings route answers, as a user's own deployment.
    custom_embedding: EmbeddingModel = attrs.field(
        factory=EmbeddingModel, converter=_embedding_model
    )

    # --- generated text and speed ---
    sentences_min: int = attrs.field(default=2, validator=_check_sentences_min)
    sentences_max: int = attrs.field(default=6, validator=_check_sentences_max)
    #: Output tokens per second (None: instant).
    tokens_per_second: float | None = attrs.field(default=None, validator=_positive_or_none)
    #: Seconds before the first token.
    first_token_latency: float = attrs.field(default=0.0, validator=_non_negative)
    #: Extra seconds added to every model request, errors included.
    latency: float = attrs.field(default=0.0, validator=_non_negative)

    # --- limits (docs/protocol.md §7) ---
    qps: float | None = attrs.field(default=None, validator=_positive_or_none)
    rpm: int | None = attrs.field(default=None, validator=_positive_int_or_none)
    tpm: int | None = attrs.field(default=None, validator=_positive_int_or_none)
    daily_quota: int | None = attrs.field(default=None, validator=_positive_int_or_none)
    total_quota: int | None = attrs.field(default=None, validator=_positive_int_or_none)
    #: X-Ratelimit-Limit-Requests / -Tokens sent while `rpm` / `tpm` is None.
    advertised_rpm: int = attrs.field(default=300, validator=_positive_int)
    advertised_tpm: int = attrs.field(default=300000, validator=_positive_int)

    # --- faults ---
    #: Seed of the emulator's ids and fault dice (None: unpredictable). Applied on creation
    #: and by `Emulator.configure(seed=...)`.
    seed: int | None = attrs.field(default=None)
    #: Fault name -> fraction of model requests it falls on (sum <= 1).
    faults: dict[str, float] = attrs.field(factory=dict, converter=_faults, validator=_check_faults)
    #: `Retry-After` seconds of the http_429 fault.
    retry_after: int = attrs.field(default=1, validator=_non_negative_int)
    #: Seconds the slow_first_byte fault waits before the headers.
    slow_seconds: float = attrs.field(default=1.0, validator=_non_negative)
    #: Text -> the error code every request containing it gets: a substring match on the
    #: completions prompt, the last chat message, or any text of an embeddings request
    #: (the first key found wins).
    fail_prompts: dict[str, int] = attrs.field(
        factory=dict, converter=_fail_prompts, validator=_check_fail_prompts
    )

    # --- stream framing (docs/protocol.md §5) ---
    #: Send ": keep-alive" comment lines before every chunk.
    sse_keepalive: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    #: Send a final "data: [DONE]" line (a v2 habit, off by default).
    sse_done: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    #: End with an extra chunk {"is_end": true, "result": ""} instead of flagging the last
    #: sentence.
    stream_empty_end: bool = attrs.field(
        default=False, validator=attrs.validators.instance_of(bool)
    )

    #: Send `sentence_id` 0 on every chunk instead of 0, 1, 2, ... (what the official SDK's
    #: own mock server does), to test clients that must not rely on the numbering.
    stream_sentence_id_zero: bool = attrs.field(
        default=False, validator=attrs.validators.instance_of(bool)
    )

    @seed.validator
    def _check_seed(self, attr: attrs.Attribute[Any], value: object) -> None:
        if value is not None and not _is_int(value):
            raise ValueError(f"seed must be None or an integer, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON-ready data (sets become sorted lists)."""
        out: dict[str, Any] = {}
        for field in attrs.fields(type(self)):
            value = getattr(self, field.name)
            if isinstance(value, set):
                value = sorted(value)
            elif isinstance(value, EmbeddingModel):
                value = attrs.asdict(value)
            elif isinstance(value, dict):
                value = {
                    k: attrs.asdict(v) if isinstance(v, EmbeddingModel) else v
                    for k, v in value.items()
                }
            out[field.name] = value
        return out

    @classmethod
    def field_names(cls) -> frozenset[str]:
        return frozenset(f.name for f in attrs.fields(cls))
