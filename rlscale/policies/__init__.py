"""Policies: every autoscaler, learned or not, behind one `Policy` protocol."""

from rlscale.policies.base import Decision, Policy

__all__ = ["Decision", "Policy"]
