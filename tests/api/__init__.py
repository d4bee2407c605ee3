"""API tests: the public contract of API.md, run against every backend."""
