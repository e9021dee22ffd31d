"""Vectors into rankings: the int8 scan and its kernels, the kept matrix, whitening, top-k.

May import cbirq.errors, cbirq.arguments, cbirq.store and cbirq.settings' constants; never
images or models (cbirq.embed), Celery, the CLI, or the environment.
"""
