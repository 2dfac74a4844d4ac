"""Reconnect policy: the shared :class:`operators.Backoff` (exponential, jittered, bounded,
seedable), importable from here as it always was."""

from __future__ import annotations

from operators.backoff import Backoff

__all__ = ["Backoff"]
