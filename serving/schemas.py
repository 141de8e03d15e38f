"""Bodies of the scoring service's requests and responses.

A lead is `model.scoring.LeadIn` and a score is `model.scoring.ScoreOut`, the same
models the batch scorer uses; this module only adds the envelopes around them (options,
batches, the model card).

Request models forbid unknown keys, so a misspelt option (`"explian": false`) is rejected
instead of silently ignored, and hide inputs in their error messages, so that validation
errors written to the server log never carry a lead's attributes (emails, names). Options are
strict (`true`, not `"true"` or `1`; `3` or `3.0`, not `"3"`), as the OpenAPI document says.

`ErrorBody` is the body of every refusal (400, 401, 403, 404, 409, 413, 415, 422).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, ValidationInfo, field_validator, model_validator

from model.bundle import Tiers
from model.scoring import IN_RANGE_SCHEMA, LeadIn, ScoreOut, Timestamp, not_in_the_future

MAX_BATCH_LEADS = 1_000
MAX_TOP_K = 10

# The languages of `features.labels.LANGUAGES`, spelt out so that the OpenAPI schema lists them
# (tests/test_service.py checks that the two agree).
Language = Literal["en", "fr"]


def _a_json_number(value: object) -> object:
    # JSON Schema's integer is a number without a fraction (3 or 3.0); pydantic's lax int would
    # also take the text "3" and the boolean true, which the document does not allow.
    if isinstance(value, (str, bool)):
        raise ValueError("must be a whole number, not text or a boolean")
    return value


class ScoringOptions(BaseModel):
    """Options shared by single and batch scoring."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    as_of: Timestamp | None = Field(
        default=None,
        description="Score the lead as it was at this time (ISO 8601; no zone means UTC), from 1970 to now and not "
        "before the lead's created_at. Now when omitted.",
        json_schema_extra=IN_RANGE_SCHEMA,
    )
    language: Language = Field(default="en", description="Language of the reason labels.")
    top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K), BeforeValidator(_a_json_number)] = Field(
        default=3, description="How many reasons to give each way (up and down)."
    )

    @field_validator("as_of")
    @classmethod
    def _not_in_the_future(cls, value: datetime | None) -> datetime | None:
        # A score "as of" tomorrow would count tomorrow's lead age with today's interactions.
        return None if value is None else not_in_the_future(value)


class ScoreRequest(ScoringOptions):
    """Body of `POST /score`: a lead with its history, or the `lead_id` of a lead in the lead store."""

    model_config = ConfigDict(
        title="ScoreRequest",
        # `_one_lead`, in the JSON Schema: exactly one of the two is given and not null (both
        # properties take null, so `required` alone would let `{"lead": null, "lead_id": "L-1"}`
        # match both branches and `{"lead": null}` match one).
        json_schema_extra={
            "oneOf": [
                {"required": ["lead"], "properties": {"lead": {"type": "object"}, "lead_id": {"type": "null"}}},
                {"required": ["lead_id"], "properties": {"lead_id": {"type": "string"}, "lead": {"type": "null"}}},
            ]
        },
    )

    # lead_id first: `_one_lead` reads it when it checks `lead`.
    lead_id: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        default=None, description="A lead of the lead store (sent by `POST /events`): scored from its stored history."
    )
    lead: LeadIn | None = Field(
        default=None, validate_default=True, description="The lead and its whole history, as the CRM has it."
    )
    explain: StrictBool = Field(default=True, description="Give the reasons behind the score.")

    @field_validator("lead")
    @classmethod
    def _one_lead(cls, value: LeadIn | None, info: ValidationInfo) -> LeadIn | None:
        # Reported at `lead`, where a client that sends neither looks for it.
        given_id = info.data.get("lead_id") is not None
        if value is None and not given_id:
            raise ValueError("Field required: give lead (the lead and its history) or lead_id (a lead of the lead store)")
        if value is not None and given_id:
            raise ValueError("give either lead or lead_id (a lead of the lead store), not both")
        return value


class ScoreBatchRequest(ScoringOptions):
    """Body of `POST /score_batch`: many leads scored at the same `as_of`."""

    model_config = ConfigDict(title="ScoreBatchRequest")

    leads: Annotated[list[LeadIn], Field(min_length=1, max_length=MAX_BATCH_LEADS)]
    explain: StrictBool = Field(default=False, description="Give the reasons behind each score (slower).")


class ScoreBatchOut(BaseModel):
    """Response of `POST /score_batch`: one result per lead, in request order."""

    model_version: str
    results: list[ScoreOut]


class ModelCard(BaseModel):
    """Response of `GET /model`: what the service is scoring with."""

    model_version: str
    trained_at: str
    horizon_days: float
    metrics: dict[str, Any] = Field(
        description="Test metrics of the model beside the point grid and a logistic regression, as stored in the bundle."
    )
    feature_names: list[str]
    tiers: Tiers
    mql_probability: float
    grid: str = Field(description="Name of the point grid scored beside the model.")


class ReloadRequest(BaseModel):
    """Body of `POST /admin/reload`: what to load; empty to load again where the model came from."""

    model_config = ConfigDict(
        extra="forbid",
        title="ReloadRequest",
        # `_one_source`, in the JSON Schema: not both given.
        json_schema_extra={
            "not": {"required": ["bundle", "version"], "properties": {"bundle": {"type": "string"}, "version": {"type": "string"}}}
        },
    )  # fmt: skip

    # No path holds a NUL byte: refused here, naming the field, before a file call would raise on it.
    bundle: Annotated[str, Field(min_length=1, max_length=4096, pattern=r"^[^\x00]+$")] | None = Field(
        default=None, description="A bundle folder on the server."
    )
    version: Annotated[str, Field(pattern=r"^[0-9]{1,9}$")] | None = Field(
        default=None, description="A version of the registered model (registry mode only)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> ReloadRequest:
        if self.bundle is not None and self.version is not None:
            raise ValueError("give either bundle or version, not both")
        return self


class ReloadOut(BaseModel):
    """Response of `POST /admin/reload`: the model now serving and the one it replaced."""

    model_version: str
    previous_model_version: str
    source: str = Field(description="Where the model came from, e.g. `registry leadscore version 3`.")
    seconds: float = Field(description="Time spent loading and checking the bundle.")


class ErrorDetail(BaseModel):
    """One thing wrong with a request, as pydantic reports a validation error."""

    type: str = Field(description="Kind of error, e.g. `missing`, `datetime_from_date_parsing`, `missing_api_key`.")
    loc: list[str | int] = Field(
        description='Path of the offending field in the request, e.g. `["leads", 3, "created_at"]`; '
        '`["header", "authorization"]` for the key; empty for the request as a whole.'
    )
    msg: str = Field(description="What is wrong, without the value sent (it may be personal data).")


class ErrorBody(BaseModel):
    """Body of every refusal: a title, and each offending field (`loc`) with why."""

    model_config = ConfigDict(title="Error")

    error: str = Field(description="Title, e.g. `1 validation error for ScoreRequest` or `Unauthorized`.")
    detail: list[ErrorDetail]
