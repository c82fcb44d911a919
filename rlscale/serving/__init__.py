"""The serving model: what a fleet of continuous-batching replicas does with an interval of load."""
