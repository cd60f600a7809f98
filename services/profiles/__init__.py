"""Reference profiles of a dataset's features: built by the lake for each snapshot, read by the monitor."""

from services.profiles.reference import DERIVED_FEATURES, build_profile, derived_features, load_profile

__all__ = ["DERIVED_FEATURES", "build_profile", "derived_features", "load_profile"]
