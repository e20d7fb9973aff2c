"""The one path every message takes, whatever its door, and the application it runs: prepare
(hl7/prepare), then the receiver (receiver.py) runs the batch through the store's unit of work
(store/unit), each message decided (apply.py: duplicate control, identity operation) and
answered (answers.py: ACK and log row); the parse workers and the group-commit writer that run
it for the asyncio doors; the one place that builds it with the operator's policy."""
