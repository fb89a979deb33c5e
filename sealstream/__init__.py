"""Sealstream: the pieces every stage shares (settings, topics, keys, CLI, local stack)."""

__version__ = "0.1.0"
