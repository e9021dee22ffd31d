"""Images into feature vectors: decoding, model families, backbones, engines, extraction, specs,
dupes' pixels.

May import cbirq.errors, cbirq.store, cbirq.rank (the ranking options a model family defaults
to), cbirq.settings' constants and, for the `resnet20` backbone, cbirq.training; never Celery,
the CLI, or the environment.
"""
