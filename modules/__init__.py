"""Modules for the :mod:`modular` application container."""
