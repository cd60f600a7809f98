"""Typed configuration shared by every service: one `FLYWHEEL_` prefix, checked at start-up."""

from services.config.settings import CommonSettings, ConfigError, describe_settings, load_settings

__all__ = ["CommonSettings", "ConfigError", "describe_settings", "load_settings"]
