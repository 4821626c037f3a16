"""MLflow's own web UI, served by mlgate at ``/mlflow/`` when the full ``mlflow`` package is
installed (the ``mlflow-ui`` extra): its static bundle, the routes it calls, and its guards."""
