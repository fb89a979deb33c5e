"""Shared test set-up: strict about leaked threads from the code under test."""

from __future__ import annotations
