"""Live controller: metrics sources, Kubernetes scaler, leader election, exporter. Never imports
rlscale.envs."""
