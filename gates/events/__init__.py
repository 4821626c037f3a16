"""Durable outbound events: an outbox written with each change, delivered by a worker."""
