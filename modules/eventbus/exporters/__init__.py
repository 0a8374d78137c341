"""Exporters of delivery stats: Prometheus (``prometheus``) and DogStatsD (``datadog``).

Each is imported on its own, so that only the client library you use must be installed.
"""
