"""API tests: the public contract of the Database, run against every backend."""
