"""A small Optuna (TPE) sweep over PPO hyperparameters on a short budget; the objective is the
best periodic evaluation score against the baseline on the held-out windows (higher is better).

    nice -n 10 python benchmarks/train_sweep.py --config training/llama-70b.yaml --trials 6 --steps 200000 \
        --set 'eval.slo_weights=[4.0]'

The untrained policy's evaluation (step 0) is skipped: it is the same for every trial. `--set`
passes further config overrides to every trial.

Writes benchmarks/results/train_sweep.json; the summary goes into training/SWEEP.md by hand.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(ROOT / "training" / "default.yaml"))
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--steps", type=int, default=150_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--set", dest="sets", action="append", default=[], help="config override for every trial"
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_sweep.json"))
    args = ap.parse_args()

    import optuna

    from rlscale.training.train import TrainConfig, train

    trials: list[dict] = []

    def objective(trial: optuna.Trial) -> float:
        sets = {
            "ppo.learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-3, log=True),
            "ppo.n_steps": trial.suggest_categorical("n_steps", [128, 256, 512]),
            "ppo.gamma": trial.suggest_categorical("gamma", [0.98, 0.99, 0.995]),
            "ppo.n_epochs": trial.suggest_categorical("n_epochs", [5, 10]),
            "ppo.ent_coef": trial.suggest_categorical("ent_coef", [0.0, 0.001]),
            "ppo.log_std_init": trial.suggest_float("log_std_init", -1.5, 0.0),
        }
        with tempfile.TemporaryDirectory() as tmp:
            overrides = [f"{k}={v}" for k, v in sets.items()]
            overrides += [
                f"total_timesteps={args.steps}",
                f"eval.every_steps={args.steps // 3}",
                f"out={tmp}/ck",
                "tensorboard_log=null",
                f"seed={args.seed}",
                "eval.at_start=false",
                *args.sets,
            ]
            cfg = TrainConfig.load(args.config, overrides)
            t0 = time.perf_counter()
            out = train(cfg, progress_bar=False, log=lambda s: None)
            curve = json.loads((out / "training_curve.json").read_text())
        best = max(p["score"] for p in curve)
        trials.append(
            {
                "number": trial.number,
                "params": sets,
                "best_score": best,
                "baseline_score": curve[0]["baseline_score"],
                "wall_s": time.perf_counter() - t0,
                "curve": curve,
            }
        )
        print(f"trial {trial.number}: {best:.4f} {sets}", flush=True)
        return best

    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=args.seed)
    )
    study.optimize(objective, n_trials=args.trials)
    Path(args.out).write_text(
        json.dumps(
            {
                "config": args.config,
                "steps": args.steps,
                "overrides": args.sets,
                "best": study.best_params,
                "best_value": study.best_value,
                "trials": trials,
            },
            indent=1,
        )
    )
    print("best", study.best_value, study.best_params)


if __name__ == "__main__":
    main()
