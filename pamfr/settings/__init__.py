"""The bottom room every other one may read: the operator's settings, where the default store
lives, the log set-up, and the values a readiness check gives (readiness.py). It imports
only the pure leaves (hl7's charset table, transport's peer filter, identity's event
types)."""
