"""The bottom room every other one may read: the operator's settings, where the default store
lives, and the log set-up. It imports only the pure leaves (hl7's charset table, transport's
peer filter, identity's event types)."""
