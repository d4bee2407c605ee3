"""The storage engine of one shard (a pure library) and the worker process around it."""
