"""The client side of the work, shared by the command line, the web page and the Python API
(api.py: `Client`, the one way in). Sending tasks (dispatch.py: broker or in-process); index runs
as jobs (indexer.py plans, index_runs.py submits and follows, coordinator.py and sender.py send
the chunks, index_jobs.py keeps the record, library.py walks folders); jobs of every kind
(jobs.py: follow, revive, cancel; workers.py: is any worker there); queries (querying.py,
sharded.py); near-duplicates (duplicates.py); evaluation (evaluating.py). Imports neither torch
nor numpy at module level; its coordinator also runs on workers (tasks.coordinate)."""
