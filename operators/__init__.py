"""Pipeable operators for rxstreams."""
