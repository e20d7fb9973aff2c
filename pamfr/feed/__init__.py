"""The change feed: identity events written in the message's transaction (outbox), read by
GET /events and `pamfr events`, and pushed to webhook subscribers by the daemon."""
