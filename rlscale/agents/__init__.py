"""Policies: every autoscaler, learned or not, behind one `Policy` protocol."""

from rlscale.agents.base import Decision, Policy

__all__ = ["Decision", "Policy"]
