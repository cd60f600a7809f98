"""Thin adapters over JobService and Registry: REST, gRPC and the Kafka train-request consumer."""
