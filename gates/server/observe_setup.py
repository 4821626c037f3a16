"""Names shared by `mlgate server` and the metrics module, importable before prometheus_client."""

# prometheus_client's own variable: `mlgate server` points it at a private temp directory
# before any worker starts, so every uvicorn worker writes its samples where a scrape of any
# one of them reads them all.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
