"""alignd: a self-hosted, managed DPO alignment service."""

__version__ = "0.1.0"
