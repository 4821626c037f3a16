"""Runs written straight from driver rows to MLflow's JSON bytes.

A 1,000-run page built about 16,000 msgspec structs (a run's info, data and inputs, each
param, tag and metric) before encoding them; building them, and the garbage collections that
many new objects set off, cost more CPU than reading the rows. Here each run becomes its JSON
text directly (bytes, which the collector does not track), byte for byte what encoding
:func:`tracking.service.rendering.run_out`'s structs gives (``test_search_hot_path.py``
compares the two): the same field order, empty lists and unset fields left out the same way,
and every string and number spelled by msgspec's own encoder. Numbers are encoded a whole
column at a time (one encoder call; a number's JSON never holds a comma, so the list's text
splits back into items).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import isfinite
from typing import Any

import msgspec

from tracking.core.wire import encode_double
from tracking.schemas import (
    DatasetInputOut,
    ModelInputOut,
    ModelOutputOut,
    RunInputsOut,
    RunOutputsOut,
)
from tracking.service.rendering import dataset_input_out
from tracking.store.read_rows import RUN_COLUMN, RunPageRows

_enc = msgspec.json.Encoder().encode
_raw = msgspec.Raw

_ID, _UUID, _EXPERIMENT = RUN_COLUMN["id"], RUN_COLUMN["run_uuid"], RUN_COLUMN["experiment_id"]
_NAME, _USER, _STATUS = RUN_COLUMN["name"], RUN_COLUMN["user_id"], RUN_COLUMN["status"]
_START, _END = RUN_COLUMN["start_time"], RUN_COLUMN["end_time"]
_URI, _STAGE = RUN_COLUMN["artifact_uri"], RUN_COLUMN["lifecycle_stage"]


def _each_json(values: list[Any]) -> list[bytes]:
    """The JSON of each item of ``values`` (numbers, None, or strings without a comma)."""
    if not values:
        return []
    return _enc(values)[1:-1].split(b",")


def _wire_value(value: float, is_nan: Any) -> float | str:
    # As run_out: NaN is stored as 0 with is_nan set; infinities travel as strings.
    return "NaN" if is_nan else (value if isfinite(value) else encode_double(value))


def _run_json(
    row: Sequence[Any], slot: list[list[bytes]], inputs: bytes, outputs: bytes
) -> msgspec.Raw:
    metrics, params, tags = slot
    data = []
    if metrics:
        data.append(b'"metrics":[' + b",".join(metrics) + b"]")
    if params:
        data.append(b'"params":[' + b",".join(params) + b"]")
    if tags:
        data.append(b'"tags":[' + b",".join(tags) + b"]")
    run_uuid = _enc(row[_UUID])
    end = row[_END]
    return _raw(
        b'{"info":{"run_id":%b,"run_uuid":%b,"run_name":%b,"experiment_id":%b,"user_id":%b,'
        b'"status":%b,"start_time":%b,"artifact_uri":%b,"lifecycle_stage":%b%b},'
        b'"data":{%b},"inputs":%b,"outputs":%b}'
        % (
            run_uuid,
            run_uuid,
            _enc(row[_NAME]),
            _enc(str(row[_EXPERIMENT])),
            _enc(row[_USER]),
            _enc(row[_STATUS]),
            _enc(row[_START]),
            _enc(row[_URI]),
            _enc(row[_STAGE]),
            b"" if end is None else b',"end_time":' + _enc(end),
            b",".join(data),
            inputs,
            outputs,
        )
    )


def runs_json(rows: RunPageRows, run_pks: Sequence[int]) -> list[msgspec.Raw]:
    """Each run of ``run_pks`` found in ``rows``, in that order, as its ``RunOut`` JSON."""
    slots: dict[int, list[list[bytes]]] = {row[_ID]: [[], [], []] for row in rows.runs}
    metrics = rows.metrics
    values = _each_json([_wire_value(m[2], m[3]) for m in metrics])
    timestamps = _each_json([m[4] for m in metrics])
    steps = _each_json([m[5] for m in metrics])
    for m, value, timestamp, step in zip(metrics, values, timestamps, steps, strict=True):
        slots[m[0]][0].append(
            b'{"key":%b,"value":%b,"timestamp":%b,"step":%b}' % (_enc(m[1]), value, timestamp, step)
        )
    for run_id, key, value in rows.params:
        slots[run_id][1].append(b'{"key":%b,"value":%b}' % (_enc(key), _enc(value)))
    for run_id, key, value in rows.tags:
        slots[run_id][2].append(b'{"key":%b,"value":%b}' % (_enc(key), _enc(value)))
    inputs, outputs = _inputs_and_outputs(rows)
    found = {row[_ID]: row for row in rows.runs}
    return [
        _run_json(found[pk], slots[pk], inputs.get(pk, b"{}"), outputs.get(pk, b"{}"))
        for pk in run_pks
        if pk in found
    ]


def _inputs_and_outputs(rows: RunPageRows) -> tuple[dict[int, bytes], dict[int, bytes]]:
    """The ``inputs`` and ``outputs`` JSON of the runs that have any (the others' are
    ``{}``), encoded from the wire structs: rare, so not worth spelling by hand."""
    if not rows.inputs and not rows.links:
        return {}, {}
    datasets: dict[int, list[DatasetInputOut]] = {}
    for d, tags in rows.inputs:
        datasets.setdefault(d.run_id, []).append(dataset_input_out(d, tags))
    model_inputs: dict[int, list[ModelInputOut]] = {}
    model_outputs: dict[int, list[ModelOutputOut]] = {}
    for run_id, model_id, direction, step in rows.links:
        if direction == "input":
            model_inputs.setdefault(run_id, []).append(ModelInputOut(model_id))
        else:
            model_outputs.setdefault(run_id, []).append(ModelOutputOut(model_id, step))
    inputs = {
        pk: _enc(
            RunInputsOut(dataset_inputs=datasets.get(pk, []), model_inputs=model_inputs.get(pk, []))
        )
        for pk in datasets.keys() | model_inputs.keys()
    }
    outputs = {pk: _enc(RunOutputsOut(model_outputs=links)) for pk, links in model_outputs.items()}
    return inputs, outputs
