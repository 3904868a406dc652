"""Helpers that start real servers for tests, the demo, the benchmark and chaos runs."""
