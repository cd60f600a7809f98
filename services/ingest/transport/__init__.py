"""Adapters: REST (native batches, Label Studio webhooks), gRPC, the Kafka consume loop."""
