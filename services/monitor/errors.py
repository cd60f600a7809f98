"""The monitor's domain errors (no transport codes: the monitor answers only /metrics and health)."""


class MonitorError(Exception):
    """Base of the monitor's errors."""


class ReferenceUnavailable(MonitorError):
    """A snapshot's reference profile cannot be read (yet); the message names the URL and why."""


class InvalidPrediction(MonitorError):
    """A prediction log the monitor cannot use (wrong feature count, non-finite values)."""
