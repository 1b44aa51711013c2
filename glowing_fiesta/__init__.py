"""Glowing Fiesta: the composition root (Config, CLI, process wiring)."""

__version__ = "0.1.0"
