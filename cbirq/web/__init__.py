"""`cbirq serve`: the search page, thumbnails, jobs and a JSON API, on Starlette.

May import cbirq.errors, cbirq.store and cbirq.embed (image decoding); the query itself is
passed in by the CLI, so nothing here knows Celery. Only `cbirq serve` imports it.
"""
