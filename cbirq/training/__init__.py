"""Training ResNet20 on CIFAR-10: data, model, optimizer, loop, config, job records and lease.

May import cbirq.errors, cbirq.arguments and cbirq.store; never cbirq.embed, cbirq.rank,
Celery, the CLI or environment.
`config` and `jobs` are stdlib only, so the CLI can check a job without importing torch.
"""
