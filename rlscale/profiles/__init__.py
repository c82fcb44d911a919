"""Service profiles: per-replica latency model, cold start and price, with their sources."""

from rlscale.profiles.model import ServiceProfile, load_profile, shipped_profiles

__all__ = ["ServiceProfile", "load_profile", "shipped_profiles"]
