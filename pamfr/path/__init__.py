"""The one path every message takes, whatever its door: prepare (hl7/prepare), commit
(store/commit), answer; the parse workers and the group-commit writer that run it for the
asyncio doors; the one place that builds it with the operator's policy."""
