"""Temporal activities: thin wrappers over providers, store and compliance (durable-runs issue)."""
