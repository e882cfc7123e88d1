"""The single source of the package version (read by the build and passed into the C++ core)."""

__version__ = "0.3.0"
