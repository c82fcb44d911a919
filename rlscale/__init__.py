"""rlscale: a reinforcement-learning autoscaler for LLM inference services on Kubernetes."""

__version__ = "0.1.0"
