"""The handwritten point grid as data: validated rules, a YAML round trip, and two scorers.

Sales teams score leads with grids such as "+20 for a director or above, +25 for a pricing page
visit, -50 for an invalid email". A `PointGrid` holds such a grid as validated data so that it can
be scored beside the model on exactly the same feature rows.

There are two executors of one set of rules:

* `PointGrid.score_frame` scores a feature frame with numpy (training, evaluation, reports);
* `PointGrid.score_row` scores one lead in pure Python and names the rules that fired (serving).

They share the membership test of every `in` rule (`GridRule.matches`) and a parity test checks
that they agree on every row.

Semantics, the same in both executors:

* ``in``: the value is one of the listed values (``1`` and ``1.0`` are the same value);
* ``min``/``max``: ``min <= value < max``, either bound may be left out;
* a missing value (None, NaN, ``pd.NA``) never satisfies a condition;
* the score is the sum of the points of the rules that fired, in rule order;
* a lead is an MQL when its score is at least ``mql_threshold``.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import numpy as np
import pandas as pd
import yaml
from pandas.api.types import infer_dtype, is_bool_dtype, is_numeric_dtype
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

CategoryValue = str | int | float
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
NonEmptyStr = Annotated[str, Field(min_length=1)]

_RULE_KEYS = ("label", "points", "feature", "in", "min", "max")
# What `infer_dtype` reports for an object column a min/max condition can compare.
_NUMERIC_INFERRED_KINDS = frozenset({"integer", "floating", "mixed-integer-float", "boolean", "empty"})


class MissingFeaturesError(KeyError, ValueError):
    """Features a grid needs are absent from the input.

    A `ValueError` (bad input) that can also be caught as a `KeyError` (missing key/column).

    Attributes:
        missing: The absent feature names, in rule order.
    """

    def __init__(self, missing: Sequence[str], where: str) -> None:
        self.missing: tuple[str, ...] = tuple(missing)
        self.where = where
        self.message = (
            f"{where} lacks {len(self.missing)} feature(s) the point grid needs: "
            + ", ".join(self.missing)
        )
        super().__init__(self.message)

    def __str__(self) -> str:
        # KeyError would otherwise print the message inside quotes.
        return self.message

    def __reduce__(self) -> tuple[type[MissingFeaturesError], tuple[tuple[str, ...], str]]:
        # Rebuild from both arguments when the error crosses a process boundary.
        return (type(self), (self.missing, self.where))


def _is_missing(value: object) -> bool:
    """Whether a single value is missing (None, NaN, pd.NA, NaT); pure Python, no pandas calls."""
    if value is None or value is pd.NA:
        return True
    try:
        return bool(value != value)  # NaN and NaT are the only values unequal to themselves
    except (TypeError, ValueError):  # array-likes: not a missing scalar
        return False


class GridRule(BaseModel):
    """One line of a point grid: points given when a feature satisfies one condition.

    A rule has exactly one condition: either ``in`` (the value is one of a list of categories) or
    numeric bounds ``min``/``max`` meaning ``min <= value < max`` (one of them may be omitted).

    Attributes:
        label: Plain words shown to sales, e.g. "Pricing page visit".
        points: Points added when the condition holds (negative to subtract).
        feature: Name of the feature column the condition reads.
        in_: Accepted values (YAML/JSON key ``in``).
        min: Inclusive lower bound.
        max: Exclusive upper bound.
    """

    # Accept `in_=` from Python and "in" from files; always write "in" (also in bundle.json).
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True)

    label: NonEmptyStr
    points: FiniteFloat
    feature: NonEmptyStr
    in_: list[CategoryValue] | None = Field(default=None, alias="in")
    min: FiniteFloat | None = None
    max: FiniteFloat | None = None

    @field_validator("in_", mode="before")
    @classmethod
    def _reject_booleans(cls, value: Any) -> Any:
        # YAML reads unquoted yes/no/true/false as booleans, and pydantic would turn True into 1.
        if isinstance(value, list):
            booleans = [item for item in value if isinstance(item, bool)]
            if booleans:
                raise PydanticCustomError(
                    "grid_boolean_value",
                    "holds the boolean(s) {booleans}; YAML reads unquoted yes/no/true/false "
                    "as booleans, so quote them (e.g. \"yes\")",
                    {"booleans": ", ".join(str(item) for item in booleans)},
                )
        return value

    @model_validator(mode="after")
    def _exactly_one_condition(self) -> GridRule:
        has_bounds = self.min is not None or self.max is not None
        if self.in_ is not None and has_bounds:
            given = ", ".join(f"'{key}'" for key in ("min", "max") if getattr(self, key) is not None)
            raise PydanticCustomError(
                "grid_two_conditions",
                "both 'in' and {given} given; a rule has exactly one condition: "
                "'in' (a list of values) or 'min'/'max' (numeric bounds)",
                {"given": given},
            )
        if self.in_ is None and not has_bounds:
            raise PydanticCustomError(
                "grid_no_condition",
                "no condition given; add 'in' (a list of values) or 'min'/'max' (numeric bounds)",
            )
        if self.in_ is not None and not self.in_:
            raise PydanticCustomError("grid_empty_in", "'in' is an empty list; it would never match")
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise PydanticCustomError(
                "grid_bounds",
                "'min' ({min}) must be below 'max' ({max}); the condition is min <= value < max",
                {"min": self.min, "max": self.max},
            )
        return self

    @property
    def is_categorical(self) -> bool:
        """Whether the condition is category membership (``in``) rather than numeric bounds."""
        return self.in_ is not None

    def matches(self, value: object) -> bool:
        """Whether one feature value satisfies this rule's condition.

        Args:
            value: A category (str, int, float) for an ``in`` rule, a number for a min/max rule;
                missing values (None, NaN, pd.NA) never match.

        Returns:
            True when the rule fires for this value.

        Raises:
            ValueError: A min/max rule received a value that is not a number (e.g. a string).
        """
        if _is_missing(value):
            return False
        if self.in_ is not None:
            # A list, not a cached set: grids list a handful of values, and pydantic private
            # attributes cost microseconds to read.
            return value in self.in_
        number = _as_number(value, self)
        return (self.min is None or number >= self.min) and (self.max is None or number < self.max)


def _as_number(value: object, rule: GridRule) -> float:
    """Convert a non-missing value for a min/max rule to float, or name the rule and value."""
    if type(value) is float or type(value) is int:  # the common case, checked cheaply first
        return float(value)
    if isinstance(value, numbers.Real):  # bool, numpy scalars
        return float(value)
    raise ValueError(
        f"rule {rule.label!r}: feature {rule.feature!r} needs a number for its min/max "
        f"condition, got {value!r} ({type(value).__name__})"
    )


def _describe_rule_errors(error: ValidationError) -> str:
    """Turn the errors of one rule into 'key: problem' phrases joined by '; '."""
    phrases = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"])
        if item["type"] == "extra_forbidden":
            phrases.append(f"unknown key {location!r} (allowed: {', '.join(_RULE_KEYS)})")
        elif item["type"] == "missing":
            phrases.append(f"{location!r} is missing")
        elif location:
            phrases.append(f"{location!r}: {item['msg']}")
        else:
            phrases.append(item["msg"])
    return "; ".join(phrases)


class PointGrid(BaseModel):
    """A point grid: rules whose points add up to a lead score, and the MQL threshold.

    Attributes:
        name: Short name of the grid, e.g. "default".
        description: Where the grid comes from and who owns it.
        mql_threshold: A lead whose points reach this value is a marketing-qualified lead.
        rules: The rules, scored in this order; labels are unique.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: NonEmptyStr
    description: str = ""
    mql_threshold: FiniteFloat
    rules: Annotated[list[GridRule], Field(min_length=1)]

    @field_validator("rules", mode="before")
    @classmethod
    def _validate_each_rule(cls, value: Any) -> Any:
        # Validate rule by rule so that every message names the rule's index and label.
        if not isinstance(value, list):
            return value
        rules: list[GridRule] = []
        problems: list[str] = []
        for index, raw in enumerate(value):
            if isinstance(raw, GridRule):
                rules.append(raw)
                continue
            if not isinstance(raw, Mapping):
                keys = ", ".join(_RULE_KEYS)
                problems.append(f"rule {index}: expected a mapping with keys {keys}, got {raw!r}")
                continue
            try:
                rules.append(GridRule.model_validate(raw))
            except ValidationError as error:
                label = raw.get("label", "<no label>")
                problems.append(f"rule {index} ({label!r}): {_describe_rule_errors(error)}")
        if problems:
            raise PydanticCustomError("grid_rules", "{problems}", {"problems": "\n".join(problems)})
        return rules

    @model_validator(mode="after")
    def _labels_are_unique(self) -> PointGrid:
        # Labels are the reasons shown to sales; two rules with one label could not be told apart.
        first_index: dict[str, int] = {}
        for index, rule in enumerate(self.rules):
            if rule.label in first_index:
                raise PydanticCustomError(
                    "grid_duplicate_label",
                    "rule {index} ({label}): label already used by rule {first}; labels must be unique",
                    {"index": index, "label": repr(rule.label), "first": first_index[rule.label]},
                )
            first_index[rule.label] = index
        return self

    def required_features(self) -> list[str]:
        """Feature names the rules read, each once, in the order of first use."""
        return list(dict.fromkeys(rule.feature for rule in self.rules))

    def is_mql(self, points: float | np.ndarray) -> bool | np.ndarray:
        """Whether points reach the MQL threshold (NaN points never do).

        Args:
            points: One score, or an array of scores from `score_frame`.

        Returns:
            A bool for a scalar, a boolean array for an array.
        """
        if isinstance(points, float | int) or np.ndim(points) == 0:  # isinstance first: np.ndim costs a microsecond
            return bool(points >= self.mql_threshold)
        return np.asarray(points, dtype=float) >= self.mql_threshold

    def score_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """Points of every row of a feature frame.

        Args:
            frame: One row per lead snapshot with at least the columns `required_features()`
                (e.g. ``seniority``, ``company_size``, ``n_pricing_page_view_90d``). Categorical
                columns may be str, object or category dtype; numeric columns any numeric dtype
                or object holding numbers and None.

        Returns:
            Float array of points, one per row, in the frame's row order.

        Raises:
            MissingFeaturesError: Required columns are absent (lists them all).
            ValueError: A min/max rule reads a column that does not hold numbers.
        """
        total = np.zeros(len(frame), dtype=float)
        for rule, fired in zip(self.rules, self.fired_frame(frame).T, strict=True):
            # Adding 0.0 where the rule did not fire keeps the sum identical to `score_row`'s.
            total += np.where(fired, rule.points, 0.0)
        return total

    def fired_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """Which rules fire on every row of a feature frame: `score_row`'s rules fired, for a frame.

        Args:
            frame: As for `score_frame`.

        Returns:
            Boolean array (rows, rules), the rules in grid order.

        Raises:
            MissingFeaturesError, ValueError: As `score_frame`.
        """
        missing = [feature for feature in self.required_features() if feature not in frame.columns]
        if missing:
            raise MissingFeaturesError(missing, "frame")
        fired = np.zeros((len(frame), len(self.rules)), dtype=bool)
        for j, rule in enumerate(self.rules):
            column = frame[rule.feature]
            if isinstance(column, pd.DataFrame):
                raise ValueError(
                    f"rule {rule.label!r}: frame has {column.shape[1]} columns named {rule.feature!r}"
                )
            fired[:, j] = _category_mask(column, rule) if rule.is_categorical else _bounds_mask(column, rule)
        return fired

    def score_row(self, row: Mapping[str, object]) -> tuple[float, list[dict[str, object]]]:
        """Points of one lead, and the rules that fired (pure Python, for the serving path).

        Args:
            row: Feature values of one lead keyed by feature name, at least `required_features()`.

        Returns:
            The total points and, in rule order, one ``{"label": str, "points": float}`` per rule
            that fired.

        Raises:
            MissingFeaturesError: Required features are absent from `row` (lists them all).
            ValueError: A min/max rule received a value that is not a number.
        """
        try:
            fires = [rule.matches(row[rule.feature]) for rule in self.rules]
        except KeyError:
            missing = [feature for feature in self.required_features() if feature not in row]
            if not missing:
                raise
            raise MissingFeaturesError(missing, "row") from None
        return self.verdict(fires)

    def verdict(self, fires: Sequence[bool]) -> tuple[float, list[dict[str, object]]]:
        """`score_row`'s answer from which rules fire (one flag per rule, in grid order): the points, added in rule order, and the rules fired."""
        total = 0.0
        fired: list[dict[str, object]] = []
        for rule, fires_here in zip(self.rules, fires, strict=True):
            if fires_here:
                total += rule.points
                fired.append({"label": rule.label, "points": rule.points})
        return total, fired

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "<string>") -> PointGrid:
        """Parse and validate a grid from YAML text.

        Args:
            text: The YAML document.
            source: What to call the text in error messages (a file name).

        Returns:
            The validated grid.

        Raises:
            ValueError: The text is not YAML, not a mapping, or not a valid grid; the message
                starts with `source` and names each offending rule.
        """
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"{source}: not valid YAML: {error}") from error
        if not isinstance(data, Mapping):
            raise ValueError(
                f"{source}: a point grid is a mapping with keys name, description, mql_threshold, "
                f"rules; got {type(data).__name__}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise ValueError(f"{source}: invalid point grid:\n{_describe_grid_errors(error)}") from error

    def to_yaml(self) -> str:
        """The grid as YAML that `from_yaml`/`load_grid` read back to an equal grid.

        Comments of a hand-written file are not kept.
        """
        data = self.model_dump(by_alias=True, exclude_none=True)
        data["mql_threshold"] = _plain_number(data["mql_threshold"])
        for rule in data["rules"]:
            for key in ("points", "min", "max"):
                if key in rule:
                    rule[key] = _plain_number(rule[key])
            if "in" in rule:
                rule["in"] = _FlowList(rule["in"])
        return yaml.dump(data, Dumper=_GridDumper, sort_keys=False, allow_unicode=True, width=100)


def _describe_grid_errors(error: ValidationError) -> str:
    """One indented line per problem of a grid, naming the key (and the rule, via the message)."""
    lines: list[str] = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"])
        if item["type"] == "grid_rules":
            lines.extend(f"  - {problem}" for problem in item["msg"].splitlines())
        elif item["type"] == "extra_forbidden":
            lines.append(f"  - unknown key {location!r} (allowed: name, description, mql_threshold, rules)")
        elif item["type"] == "missing":
            lines.append(f"  - {location!r} is missing")
        elif location:
            lines.append(f"  - {location!r}: {item['msg']}")
        else:
            lines.append(f"  - {item['msg']}")
    return "\n".join(lines)


def _category_mask(column: pd.Series, rule: GridRule) -> np.ndarray:
    """Rows whose value is among the rule's accepted values (missing values never are)."""
    codes, uniques = pd.factorize(column)  # missing values get code -1
    # Decide membership once per distinct value with the same test `score_row` uses.
    accepted = np.fromiter((rule.matches(value) for value in uniques), dtype=bool, count=len(uniques))
    return np.append(accepted, False)[codes]  # code -1 picks the trailing False


def _bounds_mask(column: pd.Series, rule: GridRule) -> np.ndarray:
    """Rows with ``min <= value < max`` (missing values never are)."""
    values = _numeric_values(column, rule)
    with np.errstate(invalid="ignore"):
        fired = ~np.isnan(values)
        if rule.min is not None:
            fired &= values >= rule.min
        if rule.max is not None:
            fired &= values < rule.max
    return fired


def _numeric_values(column: pd.Series, rule: GridRule) -> np.ndarray:
    """A column as float64 with NaN for missing values, or a ValueError naming rule and column."""
    if not isinstance(column.dtype, pd.CategoricalDtype) and (
        is_numeric_dtype(column.dtype) or is_bool_dtype(column.dtype)
    ):
        return column.to_numpy(dtype=float, na_value=np.nan)
    as_object = column.astype(object)
    kind = infer_dtype(as_object, skipna=True)
    if kind not in _NUMERIC_INFERRED_KINDS:
        example = as_object.dropna().iloc[0]
        raise ValueError(
            f"rule {rule.label!r}: feature {rule.feature!r} needs numbers for its min/max "
            f"condition, but the column has dtype {column.dtype} holding {kind} values "
            f"(e.g. {example!r})"
        )
    return as_object.to_numpy(dtype=float, na_value=np.nan)


def _plain_number(value: float) -> float | int:
    """20.0 -> 20 so that a written grid reads like the one a person typed."""
    return int(value) if float(value).is_integer() else value


class _FlowList(list):
    """A list written on one line in YAML: ``in: [director, vp, c_level]``."""


class _GridDumper(yaml.SafeDumper):
    """YAML writer for grids: value lists on one line, multi-line text as a literal block."""


def _represent_flow_list(dumper: yaml.SafeDumper, data: _FlowList) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)


def _represent_text(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_GridDumper.add_representer(_FlowList, _represent_flow_list)
_GridDumper.add_representer(str, _represent_text)
