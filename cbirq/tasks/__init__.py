"""Celery tasks: thin adapters from JSON arguments to the domain code and back."""
