"""Bundled sample media (see SOURCES.md for origin and licence)."""
