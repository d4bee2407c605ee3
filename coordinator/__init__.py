"""The coordinator: client socket, slot map, routing, fan-out, shard supervision, readiness.

- `coordinator.config`      TOML configs and the resolved spec every process receives
- `coordinator.slotmap`     the 4096 slots -> shards map, persisted in the data directory
- `coordinator.supervisor`  local shard processes: start, watch, restart with backoff, stop
- `coordinator.fanout`      answers gathered from every shard, in shard order
- `coordinator.server`      the poll loop: forwarding, cluster requests, readiness
"""
