"""agebench: batch inference and reproducible evaluation of facial age estimation models."""

__version__ = "0.1.0"
