"""The client side of the work, shared by the command line and the Python API: sending tasks
(dispatch.py: broker or in-process), indexing a folder (indexer.py, library.py), asking a query
(querying.py, sharded.py), finding near-duplicates (duplicates.py), and the API (api.py).
Imports neither torch nor numpy at module level."""
