"""PPO checkpoints: save and load a directory a live controller can serve without the training stack.

A checkpoint is a folder (`checkpoints/<name>/`):

| file | what |
|---|---|
| `policy.safetensors` | the actor: hidden layers `net.{0,2,..}` and the action mean `net.{2n}` (plain tensors) |
| `obs_norm.json` | the observation normalisation the policy was trained with: mean, var, epsilon, clip |
| `manifest.json` | contract version and feature list, ObservationSpec, ActionSpec, network shape, profile, SLO, safety limits, training config, workload hashes, rlscale version, evaluation summary, and `files: {name: sha256}` |
| `SHA256SUMS` | `sha256sum -c` format, every file above including the manifest |

Loading (`load_policy`) never unpickles: weights come from safetensors, everything else is JSON.
It verifies every hash, requires the normalisation file, and refuses a contract version or
feature list other than the running `rlscale.contract`'s, each with a one-line `InputError`.
The deterministic action is the Gaussian's mean, as SB3's `predict(deterministic=True)` gives.

Loading and deciding need only numpy, safetensors, the bottom layer (`rlscale.contract`,
`rlscale.safety`, `rlscale.errors`) and the standby tiers' names (`rlscale.profiles.standby`):
the live controller uses this module, and it must not pull in
`rlscale.envs`, stable-baselines3 or torch (torch alone is ~180 MB of a controller's memory).
torch is never imported here: `rlscale.training.ppo.build_actor` is the torch twin of the actor.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlscale.contract import (
    CONTRACT_VERSION,
    DEFAULT_SLO_TARGET,
    ActionSpec,
    IntervalMetrics,
    ObservationSpec,
    encode,
    feature_names,
    slo_weight_at_target,
    window_array,
)
from rlscale.errors import InputError
from rlscale.policies.base import Decision
from rlscale.profiles.standby import TIERS
from rlscale.safety import SafetyLimits

WEIGHTS_FILE = "policy.safetensors"
NORM_FILE = "obs_norm.json"
MANIFEST_FILE = "manifest.json"
SUMS_FILE = "SHA256SUMS"
KNOB_FEATURE = "log_slo_weight"
FORMAT_VERSION = 1
ACTIVATIONS: tuple[str, ...] = ("tanh", "relu")
# one (weight (in, out), bias (out,)) pair per Linear layer, float64, as the forward pass uses them
Layers = list[tuple[np.ndarray, np.ndarray]]


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class ObsNorm:
    """Running mean/var normalisation, as SB3's VecNormalize applies it:
    clip((obs - mean) / sqrt(var + epsilon), -clip_obs, clip_obs)."""

    mean: np.ndarray
    var: np.ndarray
    epsilon: float = 1e-8
    clip_obs: float = 10.0

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        z = (np.asarray(obs, dtype=np.float64) - self.mean) / np.sqrt(self.var + self.epsilon)
        return np.clip(z, -self.clip_obs, self.clip_obs).astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        return {
            "mean": [float(x) for x in self.mean],
            "var": [float(x) for x in self.var],
            "epsilon": float(self.epsilon),
            "clip_obs": float(self.clip_obs),
        }

    @classmethod
    def identity(cls, size: int) -> ObsNorm:
        return cls(np.zeros(size), np.ones(size), 0.0, math.inf)


class PPOPolicy:
    """A trained PPO actor behind the `Policy` protocol.

    decide(window) = ActionSpec.decode(mean_action(normalise(encode(window) [+ log slo_weight])),
    window). `limits` are the safety limits it was trained under (evaluate and serve it
    under the same ones); `slo_weight` is the runtime cost/SLO knob when the checkpoint has it
    (higher = protect the SLO harder, spend more), settable at any time.

    `standby_tier` is what a member of the pool the network learned to size is (`sleeping`,
    `warm_node`, `preloaded_node`: `profiles.standby`), None when it was trained without a pool
    (`act_spec.max_warm == 0`; a `#warm=N` pool is then an ablation on whatever the cluster has).
    A pool sized for sleeping replicas (awake in seconds) is too small for warm nodes (minutes),
    so whoever actuates the pool checks this against the tier the cluster provides.
    """

    def __init__(
        self,
        layers: Layers,
        activation: str,
        obs_norm: ObsNorm,
        obs_spec: ObservationSpec,
        act_spec: ActionSpec,
        *,
        limits: SafetyLimits | None = None,
        knob: bool = False,
        slo_weight: float | None = None,
        name: str = "ppo",
        manifest: Mapping[str, Any] | None = None,
        fixed_warm: int | None = None,
        fixed_u: float | None = None,
        standby_tier: str | None = None,
    ) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r}, expected one of {ACTIVATIONS}")
        # The forward pass runs in numpy: one decision is a few 64x64 products, where torch's
        # per-call overhead (and its thread pool on a busy node) costs milliseconds.
        self._layers = [
            (np.asarray(w, dtype=np.float64), np.asarray(b, dtype=np.float64)) for w, b in layers
        ]
        self.activation = activation
        self._hidden_act = np.tanh if activation == "tanh" else (lambda x: np.maximum(x, 0.0))
        self.obs_norm = obs_norm
        self.obs_spec = obs_spec
        self.act_spec = act_spec
        self.limits = limits or SafetyLimits()
        self.knob = knob
        self._slo_weight = float(slo_weight) if slo_weight is not None else None
        self.name = name
        self.manifest: dict[str, Any] = dict(manifest or {})
        self.standby_tier = standby_tier if act_spec.max_warm > 0 else None
        # Ablation: hold the warm pool at a fixed size instead of the policy's choice.
        self.fixed_warm = fixed_warm
        # Ablation: hold the target utilisation at u (the action space and clamps without the
        # network), to separate what training adds from what the action design gives.
        self.fixed_u = fixed_u
        self._fixed_a0: float | None = None  # the action a[0] that decodes to fixed_u
        if fixed_u is not None:
            span = act_spec.u_max - act_spec.u_min
            self._fixed_a0 = (
                float(np.clip(2.0 * (fixed_u - act_spec.u_min) / span - 1.0, -1.0, 1.0))
                if span > 0
                else 0.0
            )

    @property
    def slo_weight(self) -> float | None:
        return self._slo_weight

    @slo_weight.setter
    def slo_weight(self, value: float) -> None:
        if not self.knob:
            raise InputError(
                self.name,
                "this checkpoint was trained without the cost/SLO knob",
                field="slo_weight",
            )
        if not (math.isfinite(value) and value > 0):
            raise InputError(self.name, f"expected a weight > 0, got {value}", field="slo_weight")
        self._slo_weight = float(value)

    def reset(self) -> None:
        pass

    def observation(self, window: Sequence[IntervalMetrics]) -> np.ndarray:
        obs = encode(window, self.obs_spec)
        if self.knob:
            obs = np.concatenate(
                [obs, np.array([math.log(self._slo_weight or 1.0)], dtype=np.float32)]
            )
        return obs

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic actions (..., 2) in [-1, 1] for raw (unnormalised) observations."""
        x = self.obs_norm(obs).astype(np.float64)
        for i, (w, b) in enumerate(self._layers):
            x = x @ w + b
            if i < len(self._layers) - 1:
                x = self._hidden_act(x)
        return np.clip(x, -1.0, 1.0)

    def decide(self, window: Sequence[IntervalMetrics]) -> Decision:
        obs = self.observation(window)
        a = self.act(obs)
        if self._fixed_a0 is not None:
            a = a.copy()
            a[0] = self._fixed_a0
        rows = window_array(window, self.obs_spec)
        replicas, warm = self.act_spec.decode(a, rows[-1], self.obs_spec, rows)
        u = self.act_spec.u_min + (self.act_spec.u_max - self.act_spec.u_min) * (a[0] + 1.0) * 0.5
        r = max(0, int(replicas)) if math.isfinite(float(replicas)) else 0
        manages_warm = self.act_spec.max_warm > 0 or self.fixed_warm is not None
        if self.fixed_warm is not None:
            warm = np.full_like(warm, float(self.fixed_warm))
        reason = f"ppo: target utilisation {u:.2f} -> {r} replicas"
        if manages_warm:
            reason += f", warm pool {int(warm)}"
        return Decision(r, reason, int(warm) if manages_warm else None)


def save_checkpoint(
    path: str | Path,
    *,
    actor_state: Mapping[str, Any],
    hidden: Sequence[int],
    activation: str,
    obs_norm: ObsNorm,
    obs_spec: ObservationSpec,
    act_spec: ActionSpec,
    limits: SafetyLimits,
    knob: bool,
    extra: Mapping[str, Any] | None = None,
    extra_files: Mapping[str, str | None] | None = None,
) -> Path:
    """Write a checkpoint folder. `actor_state` (torch tensors or numpy arrays) uses
    `build_actor`'s keys (0.weight, 0.bias, 2.weight, ...);
    `extra` goes into the manifest (profile, slo, training config, workloads, evaluation);
    `extra_files` are text files written beside it and hashed like the rest (None: a file the
    caller already wrote into the folder)."""
    from safetensors.numpy import save_file

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: np.ascontiguousarray(_to_numpy(v), dtype=np.float32) for k, v in actor_state.items()
    }
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "rlscale-ppo-actor"})
    (out / NORM_FILE).write_text(json.dumps(obs_norm.to_json(), indent=1) + "\n")
    for name, text in (extra_files or {}).items():
        if text is not None:
            (out / name).write_text(text)
        elif not (out / name).exists():
            raise InputError(out / name, "missing: listed as an extra checkpoint file")
    names = [WEIGHTS_FILE, NORM_FILE, *(extra_files or {})]
    features = feature_names(obs_spec) + ([KNOB_FEATURE] if knob else [])
    from rlscale import __version__

    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "kind": "ppo",
        "contract_version": CONTRACT_VERSION,
        "features": features,
        "observation_spec": asdict(obs_spec),
        "action_spec": asdict(act_spec),
        "cost_slo_knob": knob,
        "network": {
            "obs_size": len(features),
            "hidden": [int(h) for h in hidden],
            "activation": activation,
            "action_size": 2,
            "deterministic_action": "mean",
        },
        "safety_limits": limits.model_dump(mode="json"),
        "rlscale_version": __version__,
        **dict(extra or {}),
        "files": {n: sha256_file(out / n) for n in names},
    }
    _write_manifest(out, manifest)
    return out


def _to_numpy(x: Any) -> np.ndarray:
    """A torch tensor (without importing torch) or anything numpy takes, as an array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n")
    sums = [f"{sha256_file(out / n)}  {n}" for n in [*manifest["files"], MANIFEST_FILE]]
    (out / SUMS_FILE).write_text("\n".join(sums) + "\n")


def update_checkpoint(
    path: str | Path, *, files: Mapping[str, str] | None = None, **manifest_fields: Any
) -> None:
    """Replace text files and/or manifest fields of a verified checkpoint and re-hash it (e.g. the
    full training curve or the evaluation summary written after the best model was saved)."""
    out = Path(path)
    m = verify_checkpoint(out)
    for name, text in (files or {}).items():
        (out / name).write_text(text)
        m["files"][name] = sha256_file(out / name)
    m.update(manifest_fields)
    m["files"] = m.pop("files")  # keep the hashes last
    _write_manifest(out, m)


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a checkpoint folder (or of the folder holding a given manifest.json)."""
    p = Path(path)
    if p.is_file() and p.name == MANIFEST_FILE:
        p = p.parent
    mf = p / MANIFEST_FILE
    if not p.exists():
        raise InputError(p, "checkpoint not found")
    if not mf.exists():
        raise InputError(mf, "missing: a checkpoint folder needs manifest.json")
    try:
        m = json.loads(mf.read_text())
    except (OSError, ValueError) as e:
        raise InputError(mf, f"not valid JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(m, dict):
        raise InputError(mf, "expected a JSON object")
    return m


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Check every file's sha256 against SHA256SUMS and the manifest; return the manifest."""
    root = Path(path)
    if root.is_file() and root.name == MANIFEST_FILE:
        root = root.parent
    m = read_manifest(root)
    sums_file = root / SUMS_FILE
    if not sums_file.exists():
        raise InputError(
            sums_file, "missing: the checkpoint's file hashes are required to trust it"
        )
    sums: dict[str, str] = {}
    for line in sums_file.read_text().splitlines():
        if line.strip():
            digest, _, name = line.partition("  ")
            sums[name.strip()] = digest.strip()
    files = m.get("files")
    if not isinstance(files, dict) or not files:
        raise InputError(
            root / MANIFEST_FILE, "expected a non-empty object of file hashes", field="files"
        )
    if NORM_FILE not in files:
        raise InputError(
            root / MANIFEST_FILE,
            f"lists no {NORM_FILE}: a policy without its observation normalisation runs on the wrong scale",
            field="files",
        )
    for name in [MANIFEST_FILE, *files]:
        f = root / name
        if not f.exists():
            what = (
                "the observation normalisation statistics are required"
                if name == NORM_FILE
                else "listed in the manifest"
            )
            raise InputError(f, f"missing ({what})")
        digest = sha256_file(f)
        expected = sums.get(name) if name == MANIFEST_FILE else files[name]
        if expected is None:
            raise InputError(sums_file, f"has no hash for {name}")
        if digest == expected and name in sums and sums[name] != digest:
            # the file agrees with the manifest: the list of sums is what changed
            raise InputError(
                sums_file,
                f"sha256 mismatch for {name}: the file matches the manifest, SHA256SUMS was modified",
            )
        if digest != expected or (name in sums and sums[name] != digest):
            raise InputError(
                f,
                f"sha256 mismatch: file was modified (expected {expected[:12]}..., got {digest[:12]}...)",
            )
    return m


def _check_contract(m: Mapping[str, Any], where: Path) -> tuple[ObservationSpec, ActionSpec, bool]:
    version = m.get("contract_version")
    if version == 1 and CONTRACT_VERSION == 2:
        raise InputError(
            where,
            "observation contract version 1 (demand in requests/s at one fixed request size), "
            "this rlscale speaks 2 (token-aware demand): retrain it with `rlscale train --config "
            "...` or use a shipped version-2 checkpoint",
            field="contract_version",
        )
    if version != CONTRACT_VERSION:
        raise InputError(
            where,
            f"observation contract version {version}, this rlscale speaks {CONTRACT_VERSION}: retrain or use a matching rlscale",
            field="contract_version",
        )
    try:
        obs_spec = ObservationSpec(**m["observation_spec"])
        act_spec = ActionSpec(**m["action_spec"])
    except (KeyError, TypeError) as e:
        raise InputError(where, f"bad observation_spec/action_spec ({e})") from None
    knob = bool(m.get("cost_slo_knob", False))
    expected = feature_names(obs_spec) + ([KNOB_FEATURE] if knob else [])
    got = list(m.get("features", []))
    if got != expected:
        diff = next(
            (
                f"position {i}: {a!r} != {b!r}"
                for i, (a, b) in enumerate(zip(got, expected, strict=False))
                if a != b
            ),
            f"{len(got)} features, expected {len(expected)}",
        )
        raise InputError(
            where, f"feature list does not match rlscale.contract ({diff})", field="features"
        )
    return obs_spec, act_spec, knob


def layers_from_state(state: Mapping[str, Any], n_hidden: int) -> Layers:
    """`build_actor`-keyed tensors (torch or numpy) -> the (weight (in, out), bias) pairs
    `PPOPolicy` runs: Linear layers at 0, 2, 4, ... (activations between them)."""
    return [
        (_to_numpy(state[f"{2 * i}.weight"]).T, _to_numpy(state[f"{2 * i}.bias"]))
        for i in range(n_hidden + 1)
    ]


def actor_shapes(
    obs_size: int, hidden: Sequence[int], action_size: int = 2
) -> dict[str, tuple[int, ...]]:
    """The tensors `build_actor` has, by key and (torch) shape: weight (out, in), bias (out,)."""
    sizes = [int(obs_size), *(int(h) for h in hidden), int(action_size)]
    out: dict[str, tuple[int, ...]] = {}
    for i in range(len(sizes) - 1):
        out[f"{2 * i}.weight"] = (sizes[i + 1], sizes[i])
        out[f"{2 * i}.bias"] = (sizes[i + 1],)
    return out


def load_policy(
    path: str | Path,
    *,
    slo_weight: float | None = None,
    slo_target: float | None = None,
    warm: int | None = None,
    u: float | None = None,
    name: str | None = None,
) -> PPOPolicy:
    """Load a checkpoint folder as a `PPOPolicy` (verifies hashes, normalisation, contract).
    Run-time settings (`ppo:PATH#slo_weight=W,slo_target=T,warm=N,u=U` in a policy spec):
    `slo_weight` the cost/SLO knob; `slo_target` the SLO-attainment target of a checkpoint
    trained with that knob (`envs.lagrange`: served at the target's learned multiplier; one of
    the two); `warm` holds the warm pool at N and `u` the target utilisation at U, two
    ablations (the action space and clamps without the network's choice)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    root = Path(path)
    if root.is_file() and root.name == MANIFEST_FILE:
        root = root.parent
    m = verify_checkpoint(root)
    mf = root / MANIFEST_FILE
    obs_spec, act_spec, knob = _check_contract(m, mf)
    net = m.get("network") or {}
    try:
        obs_size = int(net["obs_size"])
        hidden = [int(h) for h in net["hidden"]]
        activation = str(net.get("activation", "tanh"))
    except (KeyError, TypeError, ValueError):
        raise InputError(mf, "expected obs_size, hidden, activation", field="network") from None
    if activation not in ACTIVATIONS:
        raise InputError(
            mf, f"activation {activation!r}, expected one of {list(ACTIVATIONS)}", field="network"
        )
    if obs_size != len(m["features"]):
        raise InputError(
            mf, f"obs_size {obs_size} != {len(m['features'])} features", field="network"
        )
    try:
        state = load_file(str(root / WEIGHTS_FILE))
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(
            root / WEIGHTS_FILE, f"not a readable safetensors file ({str(e).splitlines()[0]})"
        ) from None
    want = actor_shapes(obs_size, hidden)
    got = {k: tuple(v.shape) for k, v in state.items()}
    if want != got:
        raise InputError(
            root / WEIGHTS_FILE, f"tensors {got} do not match the manifest's network {want}"
        )
    if not all(np.all(np.isfinite(v)) for v in state.values()):
        raise InputError(root / WEIGHTS_FILE, "weights must be finite (found NaN or inf)")
    layers = layers_from_state(state, len(hidden))
    norm = _read_norm(root / NORM_FILE, obs_size)
    limits_raw = m.get("safety_limits")
    try:
        limits = (
            SafetyLimits.model_validate(limits_raw) if limits_raw is not None else SafetyLimits()
        )
    except ValueError as e:
        raise InputError(mf, f"invalid ({str(e).splitlines()[0]})", field="safety_limits") from None
    if slo_target is not None and slo_weight is not None:
        raise InputError(
            mf, "give slo_target or slo_weight, not both (one knob)", field="slo_target"
        )
    table = _multipliers(m, mf)
    if table is not None and slo_weight is None:
        slo_target = float(
            m.get("default_slo_target", DEFAULT_SLO_TARGET) if slo_target is None else slo_target
        )
        lo, hi = table[0][0], table[0][-1]
        if not (math.isfinite(slo_target) and lo - 1e-9 <= slo_target <= hi + 1e-9):
            raise InputError(
                mf,
                f"slo_target {slo_target:g} is outside the range it was trained for [{lo:g}, {hi:g}]",
                field="slo_target",
            )
        slo_weight = float(slo_weight_at_target(slo_target, *table))
    elif slo_target is not None:
        raise InputError(
            mf,
            "this checkpoint was trained without the SLO-target knob (no slo_multipliers); "
            "use slo_weight",
            field="slo_target",
        )
    if knob and slo_weight is None:
        slo_weight = float(m.get("default_slo_weight", m.get("reward", {}).get("slo", 20.0)))
    if slo_weight is not None and not knob:
        raise InputError(
            mf, "this checkpoint was trained without the cost/SLO knob", field="slo_weight"
        )
    if slo_weight is not None and not (math.isfinite(slo_weight) and slo_weight > 0):
        raise InputError(mf, f"expected a weight > 0, got {slo_weight}", field="slo_weight")
    fixed_warm, fixed_u = warm, u
    if fixed_u is not None and not (act_spec.u_min <= fixed_u <= act_spec.u_max):
        raise InputError(
            root,
            f"u={fixed_u:g} is outside the action's range [{act_spec.u_min:g}, {act_spec.u_max:g}]",
            field="checkpoint",
        )
    tier = _standby_tier(m, mf)
    if fixed_warm is not None:
        limits = limits.model_copy(
            update={"max_warm_replicas": max(limits.max_warm_replicas, fixed_warm)}
        )
    return PPOPolicy(
        layers,
        activation,
        norm,
        obs_spec,
        act_spec,
        limits=limits,
        knob=knob,
        slo_weight=slo_weight if knob else None,
        name=name or "ppo",
        manifest=m,
        fixed_warm=fixed_warm,
        fixed_u=fixed_u,
        standby_tier=tier,
    )


TIER_FIELD = "training_config.env.standby_tier"


def _multipliers(m: Mapping[str, Any], mf: Path) -> tuple[list[float], list[float]] | None:
    """The SLO-target knob's table (targets ascending, weights), or None without that knob."""
    raw = m.get("slo_multipliers")
    if raw is None:
        return None
    try:
        targets = [float(t) for t in raw["slo_targets"]]
        weights = [float(w) for w in raw["slo_weights"]]
    except (KeyError, TypeError, ValueError):
        raise InputError(
            mf, "expected {slo_targets: [...], slo_weights: [...]}", field="slo_multipliers"
        ) from None
    ok = (
        len(targets) == len(weights) >= 2
        and all(0.0 < t < 1.0 for t in targets)
        and all(a < b for a, b in zip(targets, targets[1:], strict=False))
        and all(math.isfinite(w) and w > 0 for w in weights)
    )
    if not ok:
        raise InputError(
            mf,
            "expected >= 2 ascending targets in (0, 1) and as many finite weights > 0",
            field="slo_multipliers",
        )
    return targets, weights


def _standby_tier(m: Mapping[str, Any], where: Path) -> str:
    """The standby tier the checkpoint was trained with: its training config's
    `env.standby_tier` (`rlscale.envs.core.EnvConfig`), recorded with the rest of the config.
    A manifest from before the field was trained on the simulator's default, `sleeping`."""
    env = (m.get("training_config") or {}).get("env") or {}
    tier = env.get("standby_tier", "sleeping") if isinstance(env, Mapping) else "sleeping"
    if tier not in TIERS:
        raise InputError(where, f"{tier!r}: expected one of {', '.join(TIERS)}", field=TIER_FIELD)
    return str(tier)


def _read_norm(p: Path, size: int) -> ObsNorm:
    try:
        d = json.loads(p.read_text())
        mean = np.asarray(d["mean"], dtype=np.float64)
        var = np.asarray(d["var"], dtype=np.float64)
        eps = float(d["epsilon"])
        clip = float(d["clip_obs"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(p, f"expected JSON with mean, var, epsilon, clip_obs ({e})") from None
    if mean.shape != (size,) or var.shape != (size,):
        raise InputError(
            p, f"mean/var have {mean.shape}/{var.shape} entries, the policy takes {size} features"
        )
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(var)) and np.all(var >= 0)):
        raise InputError(p, "mean/var must be finite and var >= 0")
    return ObsNorm(mean, var, eps, clip)
