"""Tracking tables: experiments, runs, metrics, params, tags, datasets and logged models."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    func,
    literal_column,
)
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from tracking.core.db import Base
from tracking.core.types import BigIntPK

KEY_LEN = 250

# Params and tags are indexed by (key, the value's first VALUE_PREFIX_CHARS characters, run_id):
# values run to thousands of characters, past what a PostgreSQL btree entry may hold, so the
# index keeps a prefix and search compares it as well as the whole value.
VALUE_PREFIX_CHARS = 200


def value_prefix(column: Any) -> ColumnElement[str]:
    """The indexed prefix expression. Its bounds are inlined, never bound parameters: a
    planner matches an expression index only against the same expression with the same
    constants (SQLite textually, PostgreSQL also under a generic plan)."""
    return func.substr(column, literal_column("1"), literal_column(str(VALUE_PREFIX_CHARS)))


class Experiment(Base):
    __tablename__ = "experiments"

    experiment_id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(500), unique=True)
    artifact_location: Mapped[str] = mapped_column(String(2000))
    lifecycle_stage: Mapped[str] = mapped_column(String(32), default="active")
    creation_time: Mapped[int] = mapped_column(BigInteger)
    last_update_time: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_experiments_lifecycle_creation", "lifecycle_stage", "creation_time"),
    )


class ExperimentTag(Base):
    __tablename__ = "experiment_tags"

    experiment_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("experiments.experiment_id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(KEY_LEN), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Run(Base):
    __tablename__ = "runs"

    # A narrow integer surrogate: every per-run child table keys on it instead of the 32-char id.
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    run_uuid: Mapped[str] = mapped_column(String(32), unique=True)
    experiment_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("experiments.experiment_id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(250), default="")
    user_id: Mapped[str] = mapped_column(String(256), default="")
    status: Mapped[str] = mapped_column(String(20), default="RUNNING")
    start_time: Mapped[int] = mapped_column(BigInteger)
    end_time: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    lifecycle_stage: Mapped[str] = mapped_column(String(32), default="active")
    artifact_uri: Mapped[str] = mapped_column(String(2000))
    deleted_time: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    __table_args__ = (
        # Serves the default search order inside an experiment: start_time DESC, run_uuid ASC.
        Index(
            "ix_runs_experiment_lifecycle_start", "experiment_id", "lifecycle_stage", "start_time"
        ),
    )


class Param(Base):
    __tablename__ = "params"

    run_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(KEY_LEN), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


Index("ix_params_key_value_prefix", Param.key, value_prefix(Param.value), Param.run_id)


class Tag(Base):
    __tablename__ = "tags"

    run_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(KEY_LEN), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


Index("ix_tags_key_value_prefix", Tag.key, value_prefix(Tag.value), Tag.run_id)


class Metric(Base):
    """Full metric history. Narrow bigint key; the unique index doubles as (run, key, step)."""

    __tablename__ = "metrics"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("runs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(KEY_LEN))
    step: Mapped[int] = mapped_column(BigInteger, default=0)
    timestamp: Mapped[int] = mapped_column(BigInteger)
    # NaN is stored as 0 with is_nan set: SQLite turns a NaN REAL into NULL.
    value: Mapped[float] = mapped_column(Float)
    is_nan: Mapped[bool] = mapped_column(Boolean, default=False)
    model_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    dataset_name: Mapped[str | None] = mapped_column(String(500), nullable=True)
    dataset_digest: Mapped[str | None] = mapped_column(String(36), nullable=True)

    __table_args__ = (
        # Re-logging the identical point (MLflow's log_model re-logs step-0 metrics) is a no-op.
        UniqueConstraint(
            "run_id", "key", "step", "timestamp", "value", "is_nan", name="uq_metrics_point"
        ),
    )


class LatestMetric(Base):
    """The latest value per (run, key): the maximum (step, timestamp, value), kept by upsert."""

    __tablename__ = "latest_metrics"

    run_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(KEY_LEN), primary_key=True)
    step: Mapped[int] = mapped_column(BigInteger)
    timestamp: Mapped[int] = mapped_column(BigInteger)
    value: Mapped[float] = mapped_column(Float)
    is_nan: Mapped[bool] = mapped_column(Boolean, default=False)

    # Serves metric filters and ordering: key = ? AND value > ?. On PostgreSQL it carries
    # run_id and is_nan too, so a search walking a metric's order scans the index alone.
    __table_args__ = (
        Index(
            "ix_latest_metrics_key_value",
            "key",
            "value",
            postgresql_include=["run_id", "is_nan"],
        ),
    )


class Dataset(Base):
    __tablename__ = "datasets"

    dataset_uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    experiment_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("experiments.experiment_id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(500))
    digest: Mapped[str] = mapped_column(String(36))
    source_type: Mapped[str] = mapped_column(String(36))
    source: Mapped[str] = mapped_column(Text)
    schema: Mapped[str | None] = mapped_column(Text, nullable=True)
    profile: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (UniqueConstraint("experiment_id", "name", "digest"),)


class DatasetInput(Base):
    __tablename__ = "dataset_inputs"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("runs.id", ondelete="CASCADE"))
    dataset_uuid: Mapped[str] = mapped_column(
        String(36), ForeignKey("datasets.dataset_uuid", ondelete="CASCADE")
    )

    __table_args__ = (UniqueConstraint("run_id", "dataset_uuid"),)


class DatasetInputTag(Base):
    __tablename__ = "dataset_input_tags"

    input_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("dataset_inputs.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(String(500))


class RunModelLink(Base):
    """A logged model used by a run (direction 'input') or produced by it ('output')."""

    __tablename__ = "run_model_links"

    run_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    model_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    direction: Mapped[str] = mapped_column(String(8), primary_key=True)
    step: Mapped[int] = mapped_column(BigInteger, default=0)


class LoggedModel(Base):
    __tablename__ = "logged_models"

    model_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    experiment_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("experiments.experiment_id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(500))
    artifact_location: Mapped[str] = mapped_column(String(2000))
    creation_timestamp_ms: Mapped[int] = mapped_column(BigInteger)
    last_updated_timestamp_ms: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(32))
    lifecycle_stage: Mapped[str] = mapped_column(String(32), default="active")
    model_type: Mapped[str | None] = mapped_column(String(500), nullable=True)
    source_run_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    status_message: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (
        Index("ix_logged_models_experiment_name", "experiment_id", "name"),
        Index("ix_logged_models_source_run_id", "source_run_id"),
    )


class LoggedModelParam(Base):
    __tablename__ = "logged_model_params"

    model_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("logged_models.model_id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(KEY_LEN), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class LoggedModelTag(Base):
    __tablename__ = "logged_model_tags"

    model_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("logged_models.model_id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(KEY_LEN), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class LoggedModelMetric(Base):
    __tablename__ = "logged_model_metrics"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("logged_models.model_id", ondelete="CASCADE")
    )
    key: Mapped[str] = mapped_column(String(KEY_LEN))
    value: Mapped[float] = mapped_column(Float)
    is_nan: Mapped[bool] = mapped_column(Boolean, default=False)
    timestamp: Mapped[int] = mapped_column(BigInteger)
    step: Mapped[int] = mapped_column(BigInteger, default=0)
    run_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    dataset_name: Mapped[str | None] = mapped_column(String(500), nullable=True)
    dataset_digest: Mapped[str | None] = mapped_column(String(36), nullable=True)

    __table_args__ = (
        UniqueConstraint(
            "model_id",
            "key",
            "step",
            "timestamp",
            "value",
            "is_nan",
            "run_id",
            name="uq_logged_model_metrics_point",
        ),
    )


__all__ = [
    "Dataset",
    "DatasetInput",
    "DatasetInputTag",
    "Experiment",
    "ExperimentTag",
    "LatestMetric",
    "LoggedModel",
    "LoggedModelMetric",
    "LoggedModelParam",
    "LoggedModelTag",
    "Metric",
    "Param",
    "Run",
    "RunModelLink",
    "Tag",
]
