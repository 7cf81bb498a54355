"""The event store: eventsourcing on PostgreSQL, its hash chain, its keys, and what auditors read from it."""
