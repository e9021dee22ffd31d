"""cbirq: search by image and CIFAR-10 training as distributed jobs on Celery + Redis."""

__version__ = "0.1.0"
