"""The embedded key-value store: in memory, or durable as a log plus snapshots.

``store`` (KvAdapter, the StateAdapter), ``journal`` (log pipeline, fsync policies, compaction),
``files`` (directory layout, segments, replay), ``snapshot`` (snapshot files), ``table`` (the
in-memory table) and ``records`` (the pure record codec). Importing this package imports none of
them, so the pure codec stays free of asyncio.
"""

__all__: list[str] = []
