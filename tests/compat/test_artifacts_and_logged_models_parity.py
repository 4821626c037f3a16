"""The official MLflow client against a live mlgate: run artifact listings, '.' paths, download
types, and logged models (datasets filter, unknown source runs), as ``mlflow server`` answers."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.service_pb2 import ListArtifacts
from mlflow.tracking._tracking_service.utils import get_default_host_creds
from mlflow.utils.proto_json_utils import message_to_json
from mlflow.utils.rest_utils import call_endpoint

from tests.conftest import LiveServer

pytestmark = pytest.mark.compat

LIST_ENDPOINT = "/api/2.0/mlflow/artifacts/list"
PROXY = "/api/2.0/mlflow-artifacts/artifacts"


def _run_with_files(tmp_path: Path, unique: str) -> tuple[str, str]:
    """A run holding a.txt, MLmodel, sub/b.json and sub/deep/c.bin; (run_id, store root)."""
    client = MlflowClient()
    run = client.create_run(client.create_experiment(f"arts-{unique}"))
    src = tmp_path / "src"
    (src / "sub" / "deep").mkdir(parents=True)
    (src / "a.txt").write_text("hello")
    (src / "MLmodel").write_text("flavors: {}\n")
    (src / "sub" / "b.json").write_text("{}")
    (src / "sub" / "deep" / "c.bin").write_bytes(b"\0" * 10)
    client.log_artifacts(run.info.run_id, str(src))
    return run.info.run_id, run.info.artifact_uri.removeprefix("mlflow-artifacts:/")


def _list(tracking_uri: str, run_id: str, path: str | None = None) -> ListArtifacts.Response:
    """ListArtifacts through the client's own REST layer, parsed into MLflow's protobuf."""
    request = ListArtifacts(run_id=run_id)
    if path is not None:
        request.path = path
    return call_endpoint(
        get_default_host_creds(tracking_uri),
        LIST_ENDPOINT,
        "GET",
        message_to_json(request),
        ListArtifacts.Response(),
    )


def _files(response: ListArtifacts.Response) -> list[tuple[str, bool, int | None]]:
    return [
        (f.path, f.is_dir, f.file_size if f.HasField("file_size") else None) for f in response.files
    ]


def test_list_artifacts_endpoint_lists_run_relative_paths(
    mlflow_tracking: str, tmp_path: Path, unique: str
) -> None:
    run_id, _ = _run_with_files(tmp_path, unique)
    top = _list(mlflow_tracking, run_id)
    run = MlflowClient().get_run(run_id)
    assert top.root_uri == run.info.artifact_uri
    assert _files(top) == [("MLmodel", False, 12), ("a.txt", False, 5), ("sub", True, None)]
    assert _files(_list(mlflow_tracking, run_id, "sub")) == [
        ("sub/b.json", False, 2),
        ("sub/deep", True, None),
    ]
    # '.' segments name the directory they sit in; the answer names the canonical path.
    spellings = {".": "", "./": "", "sub/.": "sub", "./sub/": "sub", "sub/./deep": "sub/deep"}
    for spelling, canonical in spellings.items():
        listed = _files(_list(mlflow_tracking, run_id, spelling))
        assert listed == _files(_list(mlflow_tracking, run_id, canonical)), spelling
        assert listed, spelling
    # A missing directory, or a file, lists as nothing (MLflow answers just the root_uri).
    for nothing in ("nope", "a.txt"):
        raw = httpx.get(
            f"{mlflow_tracking}{LIST_ENDPOINT}", params={"run_id": run_id, "path": nothing}
        )
        assert raw.status_code == 200 and raw.json() == {"root_uri": run.info.artifact_uri}


def test_list_artifacts_endpoint_refuses_traversal_and_unknown_runs(
    mlflow_tracking: str, tmp_path: Path, unique: str
) -> None:
    run_id, _ = _run_with_files(tmp_path, unique)
    for attack in ("..", "sub/..", "sub/../..", "./../x", "/etc", "sub//deep", "%2e%2e"):
        with pytest.raises(MlflowException) as err:
            _list(mlflow_tracking, run_id, attack)
        assert err.value.error_code == "INVALID_PARAMETER_VALUE", attack
    with pytest.raises(MlflowException) as err:
        _list(mlflow_tracking, "0" * 32)
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    # The run_uuid alias is read as MLflow reads it.
    raw = httpx.get(f"{mlflow_tracking}{LIST_ENDPOINT}", params={"run_uuid": run_id})
    assert [f["path"] for f in raw.json()["files"]] == ["MLmodel", "a.txt", "sub"]


def test_download_artifacts_with_dot_paths(
    mlflow_tracking: str, tmp_path: Path, unique: str
) -> None:
    run_id, root = _run_with_files(tmp_path, unique)
    whole = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=".", dst_path=str(tmp_path / "all")
        )
    )
    assert sorted(os.listdir(whole)) == ["MLmodel", "a.txt", "sub"]
    assert (whole / "sub" / "deep" / "c.bin").read_bytes() == b"\0" * 10
    sub = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="sub/.", dst_path=str(tmp_path / "sub")
        )
    )
    assert (sub / "b.json").read_text() == "{}"
    # The client joins the proxy's base names onto the path it asked for, as with MLflow.
    listed_by_client = MlflowClient().list_artifacts(run_id, "./sub")
    assert [f.path for f in listed_by_client] == ["./sub/b.json", "./sub/deep"]
    # The proxy's own listing reads '.' the same way, and still refuses '..'.
    listed = httpx.get(f"{mlflow_tracking}{PROXY}", params={"path": f"{root}/./sub/."})
    assert [f["path"] for f in listed.json()["files"]] == ["b.json", "deep"]
    refused = httpx.get(f"{mlflow_tracking}{PROXY}", params={"path": f"{root}/sub/../.."})
    assert refused.status_code == 400
    # A missing directory lists as {} (MLflow's empty answer).
    assert httpx.get(f"{mlflow_tracking}{PROXY}", params={"path": f"{root}/nope"}).json() == {}


# name -> Content-Type mlflow server sends (mlflow/utils/mime_type_utils.py's table).
CONTENT_TYPES = {
    "notes.txt": "text/plain",
    "MLmodel": "text/plain",
    "MLproject": "application/octet-stream",  # MLflow's entry is "mlproject": no match
    "conda.yaml": "text/plain",
    "data.csv": "text/plain",
    "train.py": "text/plain",
    "metrics.json": "text/plain",
    "README.md": "text/plain",
    "plot.png": "image/png",
    "photo.jpg": "image/jpeg",
    "chart.svg": "image/svg+xml",
    "report.pdf": "application/pdf",
    "page.html": "text/html",
    "model.pkl": "application/octet-stream",
    "weights": "application/octet-stream",
    "bundle.tar.gz": "application/octet-stream",  # mlgate: the bytes are gzip, not tar
}


def test_downloads_use_mlflows_content_types_on_both_routes(
    live_server: LiveServer, mlflow_tracking: str, tmp_path: Path, unique: str
) -> None:
    client = MlflowClient()
    run = client.create_run(client.create_experiment(f"types-{unique}"))
    src = tmp_path / "types"
    src.mkdir()
    for name in CONTENT_TYPES:
        (src / name).write_bytes(b"x")
    client.log_artifacts(run.info.run_id, str(src))
    root = run.info.artifact_uri.removeprefix("mlflow-artifacts:/")
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        for name, media_type in CONTENT_TYPES.items():
            for response in (
                http.get(f"{PROXY}/{root}/{name}"),
                http.get("/get-artifact", params={"run_uuid": run.info.run_id, "path": name}),
            ):
                assert response.status_code == 200, name
                # The bare type: no charset appended, as mlflow server sends it.
                assert response.headers["content-type"] == media_type, name
                # Always an attachment with nosniff, so nothing renders on the server's origin.
                assert response.headers["content-disposition"] == f"attachment; filename={name}"
                assert response.headers["x-content-type-options"] == "nosniff"


def test_search_logged_models_applies_the_datasets_filter(
    mlflow_tracking: str, unique: str
) -> None:
    client = MlflowClient()
    eid = client.create_experiment(f"lm-datasets-{unique}")
    run_id = client.create_run(eid).info.run_id
    on_eval = client.create_logged_model(eid, name="on-eval", source_run_id=run_id)
    on_train = client.create_logged_model(eid, name="on-train", source_run_id=run_id)
    no_metrics = client.create_logged_model(eid, name="no-metrics")
    for model, dataset, digest, value in (
        (on_eval, "eval", "d1", 0.9),
        (on_train, "train", "d2", 0.95),
        (on_eval, "train", "d2", 0.5),
    ):
        client.log_metric(
            run_id,
            "acc",
            value,
            model_id=model.model_id,
            dataset_name=dataset,
            dataset_digest=digest,
        )

    def names(**kwargs: object) -> list[str]:
        found = client.search_logged_models([eid], **kwargs)  # type: ignore[arg-type]
        return [m.name for m in found]

    assert names() == ["no-metrics", "on-train", "on-eval"]  # newest first
    assert names(datasets=[{"dataset_name": "eval"}]) == ["on-eval"]
    assert names(datasets=[{"dataset_name": "train", "dataset_digest": "d2"}]) == [
        "on-train",
        "on-eval",
    ]
    assert names(datasets=[{"dataset_name": "train", "dataset_digest": "other"}]) == []
    # As in MLflow, any logged point satisfies a metric filter (on-eval's 0.9 on eval, though
    # its later point on train is 0.5).
    assert names(filter_string="metrics.acc > 0.8") == ["on-train", "on-eval"]
    # A metric filter reads only the points logged against the given datasets.
    assert names(filter_string="metrics.acc > 0.8", datasets=[{"dataset_name": "train"}]) == [
        "on-train"
    ]
    assert names(filter_string="metrics.acc > 0.8", datasets=[{"dataset_name": "eval"}]) == [
        "on-eval"
    ]
    # An order_by entry's dataset picks the points its metric is read from.
    by_train = [{"field_name": "metrics.acc", "ascending": True, "dataset_name": "train"}]
    assert names(order_by=by_train) == ["on-eval", "on-train", "no-metrics"]
    # The client itself needs dataset_name; a raw request without one gets MLflow's 400.
    raw = httpx.post(
        f"{mlflow_tracking}/api/2.0/mlflow/logged-models/search",
        json={"experiment_ids": [eid], "datasets": [{"dataset_digest": "d1"}]},
    )
    assert raw.status_code == 400
    assert raw.json() == {
        "error_code": "INVALID_PARAMETER_VALUE",
        "message": "`dataset_name` in the `datasets` clause must be specified.",
    }
    assert no_metrics.model_id not in {
        m.model_id for m in client.search_logged_models([eid], datasets=[{"dataset_name": "eval"}])
    }


def test_create_logged_model_keeps_an_unknown_source_run_id(
    mlflow_tracking: str, unique: str
) -> None:
    client = MlflowClient()
    eid = client.create_experiment(f"lm-source-{unique}")
    model = client.create_logged_model(eid, source_run_id="f" * 32, model_type="sklearn")
    assert model.source_run_id == "f" * 32
    assert client.get_logged_model(model.model_id).source_run_id == "f" * 32
    assert [
        m.model_id
        for m in client.search_logged_models([eid], filter_string=f"source_run_id = '{'f' * 32}'")
    ] == [model.model_id]
    # Longer than a run id (the column's width): refused, never truncated or a 500.
    with pytest.raises(MlflowException) as err:
        client.create_logged_model(eid, source_run_id="x" * 33)
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
