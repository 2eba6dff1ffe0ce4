"""aiohttp views mounted on the worker's web server: ingestion (ingest.py),
shared auth checks (auth.py) and JSON error bodies (errors.py)."""
