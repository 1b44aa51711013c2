"""The ingest engine and the daemon: aggregator, flusher, UDP/TCP listeners."""
