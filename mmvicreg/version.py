"""The package version, a leaf: ``mmvicreg --version`` reads it without importing the package's heavy parts."""

__version__ = "0.1.0"
