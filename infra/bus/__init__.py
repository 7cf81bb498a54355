"""The bus: the outbox relay, the CloudEvents envelope, the published contract and what it may carry."""
