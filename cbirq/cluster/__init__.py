"""Queue plumbing: the Celery app and its routes, which workers to start, shared-fs confinement.

Stdlib, Celery, cbirq.settings and cbirq.errors only: the CLI imports it, so no torch or numpy.
"""
