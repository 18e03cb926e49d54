"""The package's version, below everything that reports it (the server's API, the CLI)."""

__version__ = "0.1.0"
