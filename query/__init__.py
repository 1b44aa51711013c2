"""The aiohttp application: auth and rate limits, ingest and query handlers, OpenAPI."""
