"""Observing a deployment: plain data from Redis (:mod:`.inspect`), Prometheus metrics
(:mod:`.metrics`) and the worker's HTTP endpoints (:mod:`.http`)."""
