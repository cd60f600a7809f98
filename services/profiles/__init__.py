"""Reference profiles of a dataset's features: built by the lake for each snapshot, read by the monitor."""

from services.profiles.reference import (
    DERIVED_FEATURES,
    NULL_SUFFIX,
    build_profile,
    default_schema,
    derived_columns,
    derived_features,
    load_profile,
)

__all__ = [
    "DERIVED_FEATURES",
    "NULL_SUFFIX",
    "build_profile",
    "default_schema",
    "derived_columns",
    "derived_features",
    "load_profile",
]
