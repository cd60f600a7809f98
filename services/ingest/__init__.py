"""Labeling ingest: label events in over HTTP, Label Studio webhooks, gRPC and Kafka; objects to the
object store, metadata to SQL, normalised `LabelEvent`s out on `flywheel.labels`."""
