"""Segments: contacts chosen by tags, fields, lifecycle stage, last activity and RFM, written as
YAML files in `segments/` and evaluated as one SQL query on SQLite or PostgreSQL.

    schema   the file format (pydantic)        files    loading and validating the files
    rfm      scores and named RFM segments     fields   one contact field in SQL, per dialect
    query    a segment compiled; members(), is_member()
    preview  counts and a sample               api, table   the gateway's routes, the CLI's tables

Later code (scheduled cohorts, routing by segment) calls `members` and `is_member`.
"""

from sopflow.segmenting.query import is_member, members

__all__ = ["is_member", "members"]
