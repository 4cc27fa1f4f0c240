"""Pure inference: numpy in, numpy out. No Kafka, no asyncio, no I/O beyond loading models."""
