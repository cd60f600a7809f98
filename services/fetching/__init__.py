"""Bounded fetches of data a caller only references, shared by ingest (Label Studio task data) and the
gateway (`:predict` instances given by URL): allow-listed hosts, size, time and redirects bounded."""

from services.fetching.bounded import BoundedHttp, FetchFailed, FetchLimits

__all__ = ["BoundedHttp", "FetchFailed", "FetchLimits"]
