"""mlgate's web UI: server-rendered pages over the same services and permissions as the API.

Pages live in ``pages/`` (one module per area, each exporting ``ROUTE_HANDLERS``);
``routes`` gathers them with the UI's own error pages, CSRF checks and static files.
"""
