"""The artifact proxy: MLflow's ``/api/2.0/mlflow-artifacts`` contract over local disk or S3."""
