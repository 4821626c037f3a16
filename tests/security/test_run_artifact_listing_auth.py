"""MLflow's run listing (``GET /api/2.0/mlflow/artifacts/list``) with auth on: read on the run.

It names a run, not a store path, so its grant is the run's experiment (as for ``get-artifact``);
the listed folder is always that run's own root, so no ``path`` reaches another run's files.
"""

from __future__ import annotations

from tests.security.auth_world import API, World

LIST = f"{API}/artifacts/list"


def test_run_listing_needs_read_on_the_runs_experiment(world: World) -> None:
    for who in ("reader", "editor", "owner", "admin"):
        r = world.call(who, "GET", LIST, params={"run_id": world.run_id})
        assert r.status_code == 200, (who, r.text)
        paths = [f["path"] for f in r.json()["files"]]
        # The shared world's run also holds files other security tests upload (del-*.txt).
        assert {"a.txt", "model"} <= set(paths), paths
        assert all("/" not in p and not p.startswith(".") for p in paths), paths
    for who in ("nobody", "outsider"):
        r = world.call(who, "GET", LIST, params={"run_id": world.run_id})
        assert r.status_code == 403, (who, r.text)
        assert r.json()["error_code"] == "PERMISSION_DENIED"
    assert world.call("anonymous", "GET", LIST, params={"run_id": world.run_id}).status_code == 401
    # Another run's files are out of reach: by id without a grant, and by path never.
    hidden = world.call("reader", "GET", LIST, params={"run_id": world.hidden_run_id})
    assert hidden.status_code == 403
    for path in ("..", "../..", f"../../{world.hidden_run_id}/artifacts", "./../x"):
        escape = world.call("reader", "GET", LIST, params={"run_id": world.run_id, "path": path})
        assert escape.status_code == 400, path
    # The run_uuid alias is checked exactly as run_id.
    alias = world.call("nobody", "GET", LIST, params={"run_uuid": world.run_id})
    assert alias.status_code == 403
