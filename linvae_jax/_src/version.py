"""The library version (one place; the resume identity reads major.minor)."""
__version__ = "0.1.0"
