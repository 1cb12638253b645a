"""Procedural datasets made on the fly, deterministic by seed (no downloads)."""
