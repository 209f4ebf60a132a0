"""sopflow: sales SOPs authored as YAML, run as durable workflows, scored for compliance."""

__version__ = "0.1.0"
