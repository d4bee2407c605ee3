"""Cluster tests: real coordinator and shard processes over ZeroMQ."""
