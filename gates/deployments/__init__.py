"""Serving that follows the pointer: watching a stage or alias, replicas' reports, drift."""
