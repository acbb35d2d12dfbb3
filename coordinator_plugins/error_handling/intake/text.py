"""Storable text (see ``error_handling/text.py``, where it lives so that web/ can use it too)."""

from coordinator_plugins.error_handling.text import REPLACEMENT, storable, storable_value

__all__ = ["REPLACEMENT", "storable", "storable_value"]
