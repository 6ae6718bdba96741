"""The package version (one place: the face, the CLI and the JSON Schemas read it)."""

__version__ = "0.1.0"
