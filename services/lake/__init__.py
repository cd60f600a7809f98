"""The data lake: Kafka events into partitioned Parquet, DuckDB aggregates, versioned snapshots."""
