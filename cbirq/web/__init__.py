"""`cbirq serve`: the search page, thumbnails, jobs and a JSON API, on Starlette.

May import cbirq.errors, cbirq.client (the `Client` it is handed, for type hints) and
cbirq.embed (decoding thumbnails); never the store, Celery or the environment. Only `cbirq
serve` imports it.
"""
