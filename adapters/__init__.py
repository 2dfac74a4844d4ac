"""Adapters: where streams meet the outside world."""
