"""iphd: privacy-preserving person detection and tracking from depth and thermal cameras."""

__version__ = "0.1.0"
