"""Simulation core (numpy only, `cluster`) and the Gymnasium / SB3 environments built on it."""
