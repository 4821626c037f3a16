"""Wire structs for the tracking API, in MLflow's snake_case JSON."""

from __future__ import annotations

import msgspec

# The client always sends IDs as strings; a number is accepted and normalised.
Id = str | int


class KeyValue(msgspec.Struct):
    key: str | None = None
    value: str | None = None


# --- experiments -----------------------------------------------------------------------------


class CreateExperiment(msgspec.Struct):
    name: str | None = None
    artifact_location: str | None = None
    tags: list[KeyValue] = []


class GetExperiment(msgspec.Struct):
    experiment_id: Id | None = None


class GetExperimentByName(msgspec.Struct):
    experiment_name: str | None = None


class SearchExperiments(msgspec.Struct):
    max_results: int | None = None
    page_token: str | None = None
    filter: str | None = None
    order_by: list[str] = []
    view_type: str | None = None


class UpdateExperiment(msgspec.Struct):
    experiment_id: Id | None = None
    new_name: str | None = None


class ExperimentRef(msgspec.Struct):
    experiment_id: Id | None = None


class SetExperimentTag(msgspec.Struct):
    experiment_id: Id | None = None
    key: str | None = None
    value: str | None = None


class DeleteExperimentTag(msgspec.Struct):
    experiment_id: Id | None = None
    key: str | None = None


class ExperimentTagOut(msgspec.Struct):
    key: str
    value: str


class ExperimentOut(msgspec.Struct, omit_defaults=True):
    experiment_id: str
    name: str
    artifact_location: str
    lifecycle_stage: str
    creation_time: int
    last_update_time: int
    # mlflow server 3.17 always names the workspace; mlgate has exactly one, MLflow's default.
    workspace: str
    tags: list[ExperimentTagOut] = []


# --- runs ------------------------------------------------------------------------------------


class CreateRun(msgspec.Struct):
    experiment_id: Id | None = None
    user_id: str | None = None
    run_name: str | None = None
    start_time: int | None = None
    tags: list[KeyValue] = []


class RunRef(msgspec.Struct):
    run_id: str | None = None
    run_uuid: str | None = None

    @property
    def id(self) -> str | None:
        return self.run_id or self.run_uuid


class UpdateRun(msgspec.Struct):
    run_id: str | None = None
    run_uuid: str | None = None
    status: str | None = None
    end_time: int | None = None
    run_name: str | None = None


class MetricIn(msgspec.Struct):
    key: str | None = None
    value: float | None = None
    timestamp: int | None = None
    step: int | None = None
    model_id: str | None = None
    dataset_name: str | None = None
    dataset_digest: str | None = None
    run_id: str | None = None


class LogMetric(msgspec.Struct):
    run_id: str | None = None
    run_uuid: str | None = None
    key: str | None = None
    value: float | None = None
    timestamp: int | None = None
    step: int | None = None
    model_id: str | None = None
    dataset_name: str | None = None
    dataset_digest: str | None = None


class LogParam(msgspec.Struct):
    run_id: str | None = None
    run_uuid: str | None = None
    key: str | None = None
    value: str | None = None


class SetTag(msgspec.Struct):
    run_id: str | None = None
    run_uuid: str | None = None
    key: str | None = None
    value: str | None = None


class DeleteTag(msgspec.Struct):
    run_id: str | None = None
    key: str | None = None


class LogBatch(msgspec.Struct):
    run_id: str | None = None
    metrics: list[MetricIn] = []
    params: list[KeyValue] = []
    tags: list[KeyValue] = []


class DatasetIn(msgspec.Struct):
    name: str | None = None
    digest: str | None = None
    source_type: str | None = None
    source: str | None = None
    schema: str | None = None
    profile: str | None = None


class DatasetInputIn(msgspec.Struct):
    tags: list[KeyValue] = []
    dataset: DatasetIn | None = None


class ModelRefIn(msgspec.Struct):
    model_id: str | None = None
    step: int | None = None


class LogInputs(msgspec.Struct):
    run_id: str | None = None
    datasets: list[DatasetInputIn] = []
    models: list[ModelRefIn] = []


class LogOutputs(msgspec.Struct):
    run_id: str | None = None
    models: list[ModelRefIn] = []


class SearchRuns(msgspec.Struct):
    experiment_ids: list[Id] = []
    filter: str | None = None
    run_view_type: str | None = None
    max_results: int | None = None
    order_by: list[str] = []
    page_token: str | None = None


class GetMetricHistory(msgspec.Struct):
    run_id: str | None = None
    run_uuid: str | None = None
    metric_key: str | None = None
    max_results: int | None = None
    page_token: str | None = None


class MetricOut(msgspec.Struct, omit_defaults=True):
    key: str
    value: float | str
    timestamp: int
    # Required, so it is always sent: mlflow server emits "step": 0 (omit_defaults dropped it).
    step: int
    model_id: str | None = None
    dataset_name: str | None = None
    dataset_digest: str | None = None
    run_id: str | None = None


class TagOut(msgspec.Struct):
    key: str
    value: str


class RunInfoOut(msgspec.Struct, omit_defaults=True):
    run_id: str
    run_uuid: str
    run_name: str
    experiment_id: str
    user_id: str
    status: str
    start_time: int
    artifact_uri: str
    lifecycle_stage: str
    end_time: int | None = None


# Empty lists are left out, as mlflow server (protobuf JSON) leaves out empty repeated fields.
class RunDataOut(msgspec.Struct, omit_defaults=True):
    metrics: list[MetricOut] = []
    params: list[TagOut] = []
    tags: list[TagOut] = []


class DatasetOut(msgspec.Struct, omit_defaults=True):
    name: str
    digest: str
    source_type: str
    source: str
    schema: str | None = None
    profile: str | None = None


class DatasetInputOut(msgspec.Struct, omit_defaults=True, kw_only=True):
    tags: list[TagOut] = []
    dataset: DatasetOut


class ModelInputOut(msgspec.Struct):
    model_id: str


class ModelOutputOut(msgspec.Struct):
    model_id: str
    step: int


class RunInputsOut(msgspec.Struct, omit_defaults=True):
    dataset_inputs: list[DatasetInputOut] = []
    model_inputs: list[ModelInputOut] = []


class RunOutputsOut(msgspec.Struct, omit_defaults=True):
    model_outputs: list[ModelOutputOut] = []


class RunOut(msgspec.Struct, omit_defaults=True):
    info: RunInfoOut
    data: RunDataOut
    inputs: RunInputsOut
    # None (left out) only in runs/create's answer, which mlflow server sends without it.
    outputs: RunOutputsOut | None = None


# --- logged models -----------------------------------------------------------------------------


class CreateLoggedModel(msgspec.Struct):
    experiment_id: Id | None = None
    name: str | None = None
    model_type: str | None = None
    source_run_id: str | None = None
    params: list[KeyValue] = []
    tags: list[KeyValue] = []


class FinalizeLoggedModel(msgspec.Struct):
    model_id: str | None = None
    status: str | None = None


class SetLoggedModelTags(msgspec.Struct):
    model_id: str | None = None
    tags: list[KeyValue] = []


class LogLoggedModelParams(msgspec.Struct):
    model_id: str | None = None
    params: list[KeyValue] = []


class LoggedModelOrderBy(msgspec.Struct):
    field_name: str | None = None
    ascending: bool | None = None
    dataset_name: str | None = None
    dataset_digest: str | None = None


class DatasetFilter(msgspec.Struct):
    dataset_name: str | None = None
    dataset_digest: str | None = None


class SearchLoggedModels(msgspec.Struct):
    experiment_ids: list[Id] = []
    filter: str | None = None
    datasets: list[DatasetFilter] = []
    max_results: int | None = None
    order_by: list[LoggedModelOrderBy] = []
    page_token: str | None = None


class LoggedModelInfoOut(msgspec.Struct, omit_defaults=True):
    model_id: str
    experiment_id: str
    name: str
    creation_timestamp_ms: int
    last_updated_timestamp_ms: int
    artifact_uri: str
    status: str
    # Always sent, "" when unset, as mlflow server does; MLflow's LoggedModelInfo has no
    # lifecycle_stage, so none is sent.
    model_type: str
    source_run_id: str
    status_message: str | None = None
    tags: list[TagOut] = []


class LoggedModelDataOut(msgspec.Struct, omit_defaults=True):
    params: list[TagOut] = []
    metrics: list[MetricOut] = []


class LoggedModelOut(msgspec.Struct):
    info: LoggedModelInfoOut
    data: LoggedModelDataOut
