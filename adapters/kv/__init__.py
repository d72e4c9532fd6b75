"""The embedded key-value store: in memory, or durable as a log plus snapshots."""
