"""Application services: one per context, each the only way its commands reach the event store."""
