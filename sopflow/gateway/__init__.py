"""The FastAPI gateway: REST intake, rep outcomes and the run record (webhooks and dashboard later)."""
