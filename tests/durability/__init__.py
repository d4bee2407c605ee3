"""Crash, kill -9, byte-level recovery and integration tests of the durable embedded store."""
