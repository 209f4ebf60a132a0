"""Temporal workflows: thin shells over sopflow.sop.engine (the durable-runs issue builds them)."""
