"""Labelled evaluation of retrieval (`cbirq eval`): labels, metrics, whole-library rankings.

May import cbirq.rank, cbirq.store and cbirq.errors; never Celery, the CLI or environment.
"""
