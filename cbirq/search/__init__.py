"""Search by image: decoding, backbones and engines, feature extraction, ranking and top-k.

May import cbirq.errors, cbirq.store, cbirq.settings' constants and, for the `resnet20` backbone,
cbirq.training's model and checkpoint reader; never Celery, the CLI, or the environment.
"""
