"""Training and tuning: PPO over the simulator, and the Optuna search for the tuned rule."""
