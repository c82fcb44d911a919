"""Offline evaluation: rollouts of policies on the simulator, reports, plots and the gate."""
