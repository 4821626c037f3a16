"""Versions registered from an allow-listed external bucket (``MLGATE_EXTERNAL_SOURCES``).

A model trained elsewhere sits in ``s3://<external bucket>/trained/...`` (a moto server
process). The official client registers it; mlgate copies the bytes into its own store at
registration, so loading keeps working after the external objects are deleted or overwritten.
Every other form is refused with 400 naming the setting, and nothing is written. Run against
a server on a local store and one on S3, on the session's database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from registry.artifacts.paths import FROZEN_AREA
from tests.conftest import LiveServer, start_server, stop_server
from tests.registry import test_artifacts
from tests.registry.test_integrity import _fitted_model

pytestmark = pytest.mark.compat

BUCKET, S3_ENV = test_artifacts.BUCKET, test_artifacts.S3_ENV
moto_endpoint = test_artifacts.moto_endpoint
EXTERNAL = "trained-elsewhere"
SETTING = "MLGATE_EXTERNAL_SOURCES"


@pytest.fixture(scope="module", params=["local", "s3"])
def ext_server(
    request: pytest.FixtureRequest,
    database_url: str,
    moto_endpoint: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveServer]:
    test_artifacts.s3_client(moto_endpoint).create_bucket(Bucket=f"{EXTERNAL}-{request.param}")
    env = {
        SETTING: f"s3://{EXTERNAL}-{request.param}/models/, s3://{EXTERNAL}-{request.param}/one",
        "MLGATE_S3_ENDPOINT_URL": moto_endpoint,
        **S3_ENV,
    }
    if request.param == "s3":
        env["MLGATE_ARTIFACTS_DESTINATION"] = f"s3://{BUCKET}/ext-store"
    server = start_server(database_url, tmp_path_factory.mktemp("ext"), extra_env=env)
    server.bucket = f"{EXTERNAL}-{request.param}"  # type: ignore[attr-defined]
    yield server
    stop_server(server)
    assert "Traceback" not in server.log.read_text(errors="replace")


@pytest.fixture
def client(ext_server: LiveServer) -> Iterator[MlflowClient]:
    mlflow.set_tracking_uri(ext_server.url)
    mlflow.set_registry_uri(ext_server.url)
    yield MlflowClient()


def _upload_model(s3: Any, bucket: str, prefix: str, tmp_path: Path) -> object:
    """Save a small sklearn model locally and upload its folder to ``s3://bucket/prefix/``."""
    model, x = _fitted_model()
    local = tmp_path / uuid.uuid4().hex / "model"
    mlflow.sklearn.save_model(model, str(local), serialization_format="cloudpickle")
    for path in local.rglob("*"):
        if path.is_file():
            s3.put_object(
                Bucket=bucket, Key=f"{prefix}/{path.relative_to(local)}", Body=path.read_bytes()
            )
    return x


def test_an_allow_listed_external_model_is_copied_in_and_survives_its_deletion(
    ext_server: LiveServer, client: MlflowClient, moto_endpoint: str, tmp_path: Path
) -> None:
    s3, bucket = test_artifacts.s3_client(moto_endpoint), ext_server.bucket  # type: ignore[attr-defined]
    prefix = f"models/fraud/{uuid.uuid4().hex[:8]}"
    x = _upload_model(s3, bucket, prefix, tmp_path)
    name = f"ext-{uuid.uuid4().hex[:10]}"
    client.create_registered_model(name)
    # A trailing slash and an upper-case scheme are the one canonicalisation made.
    mv = client.create_model_version(name, f"S3://{bucket}/{prefix}/")
    assert mv.source == f"s3://{bucket}/{prefix}"  # exactly what was checked is stored
    assert mv.status == "READY"
    uri = client.get_model_version_download_uri(name, mv.version)
    assert uri.startswith(f"mlflow-artifacts:/{FROZEN_AREA}/sha256/")
    resolved = httpx.get(
        f"{ext_server.url}/api/2.0/mlgate/models/resolve", params={"uri": f"models:/{name}/1"}
    ).json()
    assert "MLmodel" in {f["path"] for f in resolved["files"]} and resolved["digest"]

    # The external objects are overwritten, then deleted: the registered version is unchanged.
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/")["Contents"]
    for item in listed:
        s3.put_object(Bucket=bucket, Key=item["Key"], Body=b"tampered")
    loaded = mlflow.pyfunc.load_model(f"models:/{name}/1")
    assert list(loaded.predict(x)) == [0, 0, 1, 1]
    for item in listed:
        s3.delete_object(Bucket=bucket, Key=item["Key"])
    loaded = mlflow.pyfunc.load_model(f"models:/{name}/1")
    assert list(loaded.predict(x)) == [0, 0, 1, 1]
    again = httpx.get(
        f"{ext_server.url}/api/2.0/mlgate/models/resolve", params={"uri": f"models:/{name}/1"}
    ).json()
    assert again["digest"] == resolved["digest"]


def test_every_other_source_form_is_refused_naming_the_setting_and_nothing_is_written(
    ext_server: LiveServer, client: MlflowClient, moto_endpoint: str
) -> None:
    s3, bucket = test_artifacts.s3_client(moto_endpoint), ext_server.bucket  # type: ignore[attr-defined]
    test_artifacts.s3_client(moto_endpoint).create_bucket(Bucket=f"{bucket}-other")
    prefix = f"models/x/{uuid.uuid4().hex[:8]}"
    for where, key in (
        (bucket, prefix),
        (bucket, "models-evil/x"),
        (f"{bucket}-other", "models/x"),
        (bucket, "onex/m"),
    ):
        s3.put_object(Bucket=where, Key=f"{key}/MLmodel", Body=b"flavors: {}\n")
    name = f"ext-refused-{uuid.uuid4().hex[:10]}"
    client.create_registered_model(name)
    refused = [
        "file:///etc/passwd",
        "/etc/passwd",
        "relative/model",
        "http://example.com/model",
        "https://example.com/model",
        "gs://bucket/models/x",
        "s3a://{b}/{p}",
        "s3://{b}-other/models/x",  # an unlisted bucket
        "s3://{b}/models-evil/x",  # a prefix, but not on a segment boundary
        "s3://{b}/onex/m",
        "s3://{b}/models/../models-evil/x",
        "s3://{b}/models//x",
        "s3://{b}/models/%2e%2e/models-evil/x",
        "s3://{b}/{p}?versionId=1",
        "s3://{b}/{p}#x",
        "s3://Bad_Bucket/models/x",
        "s3://user@{b}/models/x",
    ]
    for raw in refused:
        source = raw.format(b=bucket, p=prefix)
        with pytest.raises(MlflowException) as err:
            client.create_model_version(name, source)
        assert err.value.error_code == "INVALID_PARAMETER_VALUE", source
        assert err.value.get_http_status_code() == 400, source
        if "%" not in source and "?" not in source and "#" not in source:
            assert SETTING in err.value.message, (source, err.value.message)
    assert client.search_model_versions(f"name = '{name}'") == []
    # The next registration still gets version 1: no number was consumed.
    assert client.create_model_version(name, f"s3://{bucket}/{prefix}").version == "1"
    # An object key that is not a plain relative path refuses the whole folder.
    s3.put_object(Bucket=bucket, Key=f"{prefix}-dots/a/../../escape", Body=b"x")
    with pytest.raises(MlflowException, match="not a plain relative path"):
        client.create_model_version(name, f"s3://{bucket}/{prefix}-dots")
    # An allowed folder holding nothing is refused too (a typo, not an empty model).
    with pytest.raises(MlflowException, match="holds no files"):
        client.create_model_version(name, f"s3://{bucket}/models/nothing-here")
    assert [mv.version for mv in client.search_model_versions(f"name = '{name}'")] == ["1"]
