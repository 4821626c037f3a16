"""Rows and bundles rendered as MLflow's wire structs."""

from __future__ import annotations

from collections.abc import Sequence
from math import isfinite
from typing import Any

from tracking import store
from tracking.core.wire import encode_double
from tracking.schemas import (
    DatasetInputOut,
    DatasetOut,
    ExperimentOut,
    ExperimentTagOut,
    LoggedModelDataOut,
    LoggedModelInfoOut,
    LoggedModelOut,
    MetricOut,
    ModelInputOut,
    ModelOutputOut,
    RunDataOut,
    RunInfoOut,
    RunInputsOut,
    RunOut,
    RunOutputsOut,
    TagOut,
)


def experiment_out(row: Any, tags: Sequence[tuple[str, str]]) -> ExperimentOut:
    return ExperimentOut(
        experiment_id=str(row.experiment_id),
        name=row.name,
        artifact_location=row.artifact_location,
        lifecycle_stage=row.lifecycle_stage,
        creation_time=row.creation_time,
        last_update_time=row.last_update_time,
        workspace="default",
        tags=[ExperimentTagOut(k, v) for k, v in tags],
    )


def metric_value(value: float, is_nan: bool) -> float | str:
    return "NaN" if is_nan else encode_double(value)


def dataset_input_out(d: Any, tags: Sequence[tuple[str, str]]) -> DatasetInputOut:
    """A run's dataset input (its dataset row and the input's tags) on the wire."""
    return DatasetInputOut(
        tags=[TagOut(k, v) for k, v in tags],
        dataset=DatasetOut(
            name=d.name,
            digest=d.digest,
            source_type=d.source_type,
            source=d.source,
            schema=d.schema,
            profile=d.profile,
        ),
    )


def run_out(b: store.RunBundle, experiment_id: int | None = None) -> RunOut:
    r = b.row
    return RunOut(
        info=RunInfoOut(
            run_id=r.run_uuid,
            run_uuid=r.run_uuid,
            run_name=r.name,
            experiment_id=str(r.experiment_id if experiment_id is None else experiment_id),
            user_id=r.user_id,
            status=r.status,
            start_time=r.start_time,
            end_time=r.end_time,
            artifact_uri=r.artifact_uri,
            lifecycle_stage=r.lifecycle_stage,
        ),
        data=RunDataOut(
            # Rows are (run_id, key, value, is_nan, timestamp, step) tuples.
            metrics=[
                MetricOut(
                    m[1],
                    "NaN" if m[3] else (m[2] if isfinite(m[2]) else encode_double(m[2])),
                    m[4],
                    m[5],
                )
                for m in b.metrics
            ],
            params=[TagOut(k, v) for k, v in b.params],
            tags=[TagOut(k, v) for k, v in b.tags],
        ),
        inputs=RunInputsOut(
            dataset_inputs=[dataset_input_out(d, tags) for d, tags in b.dataset_inputs],
            model_inputs=[ModelInputOut(m) for m in b.model_inputs],
        ),
        outputs=RunOutputsOut(model_outputs=[ModelOutputOut(m, st) for m, st in b.model_outputs]),
    )


def logged_model_out(b: store.LoggedModelBundle) -> LoggedModelOut:
    r = b.row
    return LoggedModelOut(
        info=LoggedModelInfoOut(
            model_id=r.model_id,
            experiment_id=str(r.experiment_id),
            name=r.name,
            creation_timestamp_ms=r.creation_timestamp_ms,
            last_updated_timestamp_ms=r.last_updated_timestamp_ms,
            artifact_uri=r.artifact_location,
            status=r.status,
            model_type=r.model_type or "",
            source_run_id=r.source_run_id or "",
            status_message=r.status_message,
            tags=[TagOut(k, v) for k, v in b.tags],
        ),
        data=LoggedModelDataOut(
            params=[TagOut(k, v) for k, v in b.params],
            metrics=[
                MetricOut(
                    key=m.key,
                    value=metric_value(m.value, m.is_nan),
                    timestamp=m.timestamp,
                    step=m.step,
                    model_id=m.model_id,
                    dataset_name=m.dataset_name,
                    dataset_digest=m.dataset_digest,
                    run_id=m.run_id,
                )
                for m in b.metrics
            ],
        ),
    )
