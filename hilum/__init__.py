"""Hilum: what the API and the worker share (settings, database, storage layout, CLI)."""

__version__ = "0.1.0"
