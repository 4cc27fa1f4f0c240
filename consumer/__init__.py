"""The streaming service: Kafka I/O, per-link windows, batching, publishing, CLI."""
