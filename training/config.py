"""The project config file (`leadscore.yaml`): features, training and registry settings.

Every default lives here once; the CLI reads a file and overrides only what its options say.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from features.snapshots import DEFAULT_HORIZON_DAYS, DEFAULT_OFFSETS_DAYS
from features.spec import FeatureSpec, VocabularyRule
from features.vocabulary import NEVER_SEEN_DAYS, RECENCY_PREFIX
from model.registry import RegistryConfig
from sources.grids import is_builtin_grid
from sources.loader import CONFIG_FOLDER, DataConfig
from training.gate import GateConfig
from training.selection_config import SelectionConfig

DEFAULT_CONFIG_FILE = Path("leadscore.yaml")


def constrained_recencies(monotone_decreasing: list[str]) -> list[str]:
    """The recency features (`days_since_<type>`) among monotone-decreasing ones."""
    return [f for f in monotone_decreasing if f.startswith(RECENCY_PREFIX)]


class LightGBMParams(BaseModel):
    """LightGBM settings; early stopping on the validation period picks the number of trees."""

    model_config = ConfigDict(extra="forbid")

    # Many small trees: exact TreeSHAP (the reasons) costs about leaves x depth^2 per tree, and
    # on the simulated 20,000-lead funnel 7 leaves at depth 3 with half the columns per tree
    # come closest to the oracle (benchmarks/README.md, "Explanation cost").
    learning_rate: float = Field(default=0.03, gt=0, le=1)
    num_leaves: int = Field(default=7, ge=2)
    max_depth: int = 3
    min_child_samples: int = Field(default=100, ge=1)
    feature_fraction: float = Field(default=0.5, gt=0, le=1)
    bagging_fraction: float = Field(default=0.8, gt=0, le=1)
    bagging_freq: int = 1
    lambda_l2: float = Field(default=1.0, ge=0)
    cat_smooth: float = 10.0
    # LightGBM's defaults; a small export with many rare category levels may want fewer.
    min_data_per_group: int = Field(default=100, ge=1)
    cat_l2: float = Field(default=10.0, ge=0)
    # Numeric features whose increase may never lower the score (e.g. time on the website).
    monotone_increasing: list[str] = Field(default_factory=list)
    # Numeric features whose increase may never raise the score (e.g. days since the last demo request).
    monotone_decreasing: list[str] = Field(default_factory=list)
    max_rounds: int = Field(default=2000, ge=1)
    early_stopping_rounds: int = Field(default=150, ge=1)
    num_threads: int = 0


class TrainingConfig(BaseModel):
    """How snapshots, labels and the time split are made, and what is trained.

    The split is by lead creation time: the last `test_fraction` of leads (among those old
    enough to have a matured label) are the test period, the `valid_fraction` before them the
    validation period, the rest train. Train snapshots must also have their label window
    closed before the validation period starts.
    """

    model_config = ConfigDict(extra="forbid")

    horizon_days: float = Field(default=DEFAULT_HORIZON_DAYS, gt=0)
    snapshot_offsets_days: list[float] = Field(default_factory=lambda: [float(d) for d in DEFAULT_OFFSETS_DAYS])
    valid_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    test_fraction: float = Field(default=0.2, gt=0, lt=0.5)
    # A grid file, or the name of a grid leadscore ships ("default": sources/builtin_grids/default.yaml).
    grid: Path = Path("default")
    lightgbm: LightGBMParams = Field(default_factory=LightGBMParams)
    n_bootstrap: int = Field(default=200, ge=0)
    gate: GateConfig = Field(default_factory=GateConfig, description="The promotion gate (training.gate)")
    selection: SelectionConfig = Field(
        default_factory=SelectionConfig, description="Candidates chosen on time for an ordered export (training.selection)"
    )
    hot_share: float = Field(default=0.1, gt=0, lt=1, description="Share of validation leads rated hot")
    warm_share: float = Field(default=0.3, gt=0, lt=1, description="Share rated warm, below hot")
    seed: int = 0

    @field_validator("grid", mode="before")
    @classmethod
    def _grid_from_config_folder(cls, value: object, info: ValidationInfo) -> object:
        # A grid file named in a config file is read from that file's folder, as data sources are.
        folder = (info.context or {}).get(CONFIG_FOLDER)
        if folder is None or value is None or is_builtin_grid(str(value)) or Path(str(value)).is_absolute():
            return value
        return Path(folder) / str(value)

    @model_validator(mode="after")
    def _shares(self) -> TrainingConfig:
        if self.hot_share + self.warm_share >= 1:
            raise ValueError("hot_share + warm_share must be below 1")
        if any(o < 0 for o in self.snapshot_offsets_days):
            raise ValueError("snapshot_offsets_days must be >= 0")
        return self




SIMULATOR_FEATURES = FeatureSpec(
    categorical=["industry", "company_size", "country", "job_role", "seniority", "source", "marketing_consent"],
    numeric=["employee_count"],
    email_column="email",
)


class ProjectConfig(BaseModel):
    """Everything `leadscore.yaml` holds."""

    model_config = ConfigDict(extra="forbid")

    features: FeatureSpec = Field(default_factory=lambda: SIMULATOR_FEATURES.model_copy(deep=True))
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    data: DataConfig | None = Field(
        default=None, description="Your own export (CRM, warehouse, spreadsheet); see docs/byo-data.md"
    )

    @model_validator(mode="after")
    def _attributes_from_data(self) -> ProjectConfig:
        # With a data: section, data.columns declares the lead attributes; features: keeps the
        # interaction settings (vocabulary, windows, weights).
        if self.data is None:
            return self
        derived = self.data.feature_spec(self.features)
        given = self.features.model_fields_set if "features" in self.model_fields_set else set()
        for key in ("categorical", "numeric", "email_column", "properties"):
            if key in given and getattr(self.features, key) != getattr(derived, key):
                where = "data.interactions[].properties declares the event properties" if key == "properties" else "data.columns declares the lead attributes"
                raise ValueError(f"features.{key}: leave it out when data: is given; {where}")
        if self.data.interactions and not {"interaction_types", "learn_types"} & given:
            # An export as it comes: its own event types become feature families (features.learn_types).
            derived = derived.model_copy(update={"learn_types": VocabularyRule()})
        self.features = derived
        return self

    @model_validator(mode="after")
    def _never_seen_after_every_recency(self) -> ProjectConfig:
        # A recency constrained decreasing needs "never" ordered after every real recency
        # (features.never_seen_days), or the first event of a type could lower the score.
        if self.features.never_seen_days is None and constrained_recencies(self.training.lightgbm.monotone_decreasing):
            self.features = self.features.model_copy(update={"never_seen_days": NEVER_SEEN_DAYS})
        return self


class _Yaml12Loader(yaml.SafeLoader):
    """YAML with YAML 1.2's booleans (true/false only): `on: id` is a key named "on", `[yes, no]` are words."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class ConfigError(ValueError):
    """The config file is unreadable or breaks a rule; the message names the key."""


def load_config(path: Path | str | None) -> ProjectConfig:
    """Read and validate a config file; None or a missing default file gives the defaults.

    Relative paths in the file (`data:` sources, `training.grid`) are read from the file's
    folder, so a config works from any working directory.

    Raises:
        ConfigError: naming the file, each offending key and what is expected.
    """
    if path is None:
        if not DEFAULT_CONFIG_FILE.exists():
            return ProjectConfig()
        path = DEFAULT_CONFIG_FILE
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        raw = yaml.load(path.read_text(), Loader=_Yaml12Loader) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    try:
        # Relative paths in the file (data sources, training.grid) are read from its folder.
        return ProjectConfig.model_validate(raw, context={CONFIG_FOLDER: path.resolve().parent})
    except ValidationError as error:
        lines = [
            f"  {'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            for e in error.errors()
        ]
        raise ConfigError(f"{path}: invalid config\n" + "\n".join(lines)) from error
