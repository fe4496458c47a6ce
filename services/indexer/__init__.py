"""The indexer: Celery workers that put the tags of stored objects into the index, and the sweeper."""
