"""Fit the shipped service profiles from the calibration data in ../shared/data.

    rlscale profiles fit --data ../shared/data --out rlscale/profiles [--check]

(the command is in rlscale/cli/profiles.py; this module is the library it calls)

This writes `<name>.yaml` for each profile in `SPECS` and `FITS.md` (data filter, points, coefficients,
R², and the per-point error table). `--check` writes nothing and exits 1 when the files on disk
differ from what the data give. The story, top to bottom:

1. **Measured points** (`measured_points`): the rows of `perf_aiconfigurator_silicon_sample.csv`
   selected by the profile's `PerfSelection` (model, GPU, backend, precision, TP, `mode=agg`),
   each flagged for the fits:
   - *above the KV knee*: KV demand c * (isl + osl/2) > kv_cache_tokens, or c > max_batch. Past
     the knee vLLM preempts and queues, TTFT explodes, and the point no longer measures the
     batch's speed; excluded from both fits.
   - *exploded*: TTFT more than 4x the group's previous (half as concurrent) point. Below the
     knee TTFT at most roughly doubles when c doubles; a data-driven second opinion on the knee.
     Excluded from both fits.
   - *warm-up*: a point at lower concurrency than its (isl, osl) group's minimum TTFT. TTFT cannot
     physically fall as concurrency rises; the README (§2) calls these benchmark warm-up
     artefacts. Excluded from the TTFT fit only (their TPOT is clean).
2. **TPOT** (`fit_tpot`): linear least squares, coefficients >= 0, of
   TPOT = base + (per_seq + per_seq_per_ktok * ctx/1000 + per_prefill_token * isl/osl) * c.
3. **TTFT** (`fit_ttft`): TTFT = base + per_token * isl * (1 + interference * c / max_batch),
   linear in (1, isl, isl * c); fitted on relative residuals with a soft-L1 loss (scale 5 %), so
   the few noisy points left after the filters pull the fit like a median would, not a mean.
4. **KV capacity** (`KvBudget`): vLLM's memory arithmetic, from the model architecture, not the
   data; the data's knee (where TTFT explodes) checks it (`knee_check`).
5. **Engine calibration** (`engine_fit.json` beside the profiles, written by
   `benchmarks/calibration.py`): the iteration-time coefficients fitted by simulating each
   point's benchmark in the request-level engine (`rlscale.serving.benchfit`; this layer cannot
   run the engine, so it reads the record). FITS.md reports it; a profile the record marks
   `shipped` carries the engine-fitted `tpot_*` and `prefill_base_ms` in its YAML.
6. **Cold start, price, typical request**: triangular stages from `cold_start_measurements.csv`
   and README §5; H100 price from `gpu_prices_usd_per_hour.csv`; request sizes from the Azure
   conversation trace.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from scipy.optimize import least_squares, lsq_linear

from rlscale.errors import InputError
from rlscale.profiles.model import PROFILE_DIR, LatencyModel, ServiceProfile, Stage

PERF_FILE = "perf_aiconfigurator_silicon_sample.csv"
PERF_FITS_FILE = "perf_calibration_fits_aiconfigurator.csv"
COLD_START_FILE = "cold_start_measurements.csv"
PRICES_FILE = "gpu_prices_usd_per_hour.csv"
CONV_TRACE_FILE = "azure_llm_2023_conv.csv"
ENGINE_FIT_FILE = "engine_fit.json"

GIB = 2**30
# vLLM sizes the KV cache from cudaMemGetInfo's total, which on an H100 80GB HBM3 is 79.11 GiB
# (nvidia-smi shows 81,559 MiB; the driver keeps the rest). Public vLLM start-up logs of
# Llama-3.1-8B-Instruct on one H100 read "total_gpu_memory (79.11GiB) x gpu_memory_utilization
# (0.90) = 71.20GiB; model weights take 14.99GiB; non_torch_memory takes 0.32GiB; PyTorch
# activation peak memory takes 1.21GiB; ... KV Cache is 54.68GiB ... 447,776 tokens".
H100_TOTAL_GIB = 79.11
GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default --gpu-memory-utilization
# Activation peak (~1.2 GiB at 8,192 batched tokens) + non-torch memory (~0.3 GiB) + CUDA graphs
# (~0.5 GiB), per GPU: 2.0 GiB, a little above the log's 1.5 GiB because the log predates
# vLLM's accounting of CUDA-graph memory.
OVERHEAD_GIB_PER_GPU = 2.0
KV_BLOCK_TOKENS = 16  # vLLM's default block size; capacity is a whole number of blocks

TTFT_EXPLOSION_RATIO = 4.0
TTFT_LOSS_SCALE = 0.05  # soft-L1 scale on relative TTFT residuals

P_NEW_NODE = 0.2
P_IMAGE_UNCACHED = 0.1
COLD_START_PROBABILITIES = (
    "The probabilities of the occasional stages are assumptions about the cluster, not data. A cluster "
    "autoscaler with a small warm GPU node pool (or over-provisioning placeholder pods) absorbs most "
    "scale-ups on a node that is already up; about one scale-up in five outruns the pool and waits "
    f"for a new node: P(gpu_node_provisioning) = {P_NEW_NODE}. Pool nodes pre-pull the serving image (a "
    "pre-puller DaemonSet, or a node image with it baked in), so only a new node can miss it, and "
    "about half of new nodes do (the pod lands before any pre-pull): P(image_pull_uncached) = "
    f"{P_NEW_NODE} x 0.5 = {P_IMAGE_UNCACHED}. The stages are drawn independently, so an uncached pull "
    "sometimes lands on an old node; the mean cold start is what the two probabilities give either way. "
    "An operator with no warm pool (every scale-up a new node) should set both near 1."
)


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int, dtype_bytes: int) -> int:
    """K and V, every layer, every KV head: Llama-3.1-8B in bf16 = 2*32*8*128*2 = 131,072 B."""
    return 2 * layers * kv_heads * head_dim * dtype_bytes


@dataclass(frozen=True)
class KvBudget:
    """vLLM's KV-cache arithmetic for one replica: per GPU, utilisation * total - overhead; over the
    replica, minus the weights; divided by the bytes one token's KV takes (over all GPUs)."""

    gpus: int
    weights_bytes: float
    kv_bytes_per_token: int

    @property
    def kv_bytes(self) -> float:
        per_gpu = (H100_TOTAL_GIB * GPU_MEMORY_UTILIZATION - OVERHEAD_GIB_PER_GPU) * GIB
        return self.gpus * per_gpu - self.weights_bytes

    @property
    def kv_cache_tokens(self) -> int:
        tokens = self.kv_bytes / self.kv_bytes_per_token
        return int(tokens // KV_BLOCK_TOKENS * KV_BLOCK_TOKENS)


# Llama-3.1 geometry (config.json): 8B 32 layers, 70B 80 layers; both 8 KV heads of dim 128 and a
# 128,256-token vocabulary. FP8 checkpoints keep the embedding and LM head in bf16.
LLAMA_8B_PARAMS = 8.03e9
LLAMA_70B_PARAMS = 70.55e9
LLAMA_70B_EMBED_PARAMS = 2 * 128_256 * 8_192  # embed_tokens + lm_head
LLAMA_8B_BF16_WEIGHTS = LLAMA_8B_PARAMS * 2  # 16.06 GB = 14.96 GiB
LLAMA_70B_FP8_WEIGHTS = (
    LLAMA_70B_PARAMS - LLAMA_70B_EMBED_PARAMS
) * 1 + LLAMA_70B_EMBED_PARAMS * 2  # 72.7 GB
LLAMA_8B_KV_BF16 = kv_bytes_per_token(32, 8, 128, 2)  # 128 KiB
LLAMA_70B_KV_BF16 = kv_bytes_per_token(80, 8, 128, 2)  # 320 KiB


@dataclass(frozen=True)
class PerfSelection:
    """Which rows of perf_aiconfigurator_silicon_sample.csv a profile is fitted from."""

    model_path: str
    system: str
    backend: str
    tp_size: int
    precision: str  # "" = the file leaves it empty (not recorded)
    mode: str = "agg"

    def describe(self) -> str:
        precision = self.precision or "(empty)"
        return (
            f"{PERF_FILE}: model_path={self.model_path}, system={self.system}, backend={self.backend}, "
            f"precision={precision}, mode={self.mode}, tp_size={self.tp_size}"
        )

    def apply(self, perf: pd.DataFrame) -> pd.DataFrame:
        precision = perf["precision"].fillna("").astype(str)
        mask = (
            (perf["model_path"] == self.model_path)
            & (perf["system"] == self.system)
            & (perf["backend"] == self.backend)
            & (perf["tp_size"] == self.tp_size)
            & (precision == self.precision)
            & (perf["mode"] == self.mode)
        )
        return perf[mask]


@dataclass(frozen=True)
class StageSpec:
    name: str
    low_s: float
    mode_s: float
    high_s: float
    probability: float
    source: str

    def stage(self) -> Stage:
        return Stage(
            name=self.name,
            low_s=self.low_s,
            mode_s=self.mode_s,
            high_s=self.high_s,
            probability=self.probability,
        )


@dataclass(frozen=True)
class ProfileSpec:
    """Everything about a profile that is chosen rather than fitted, with the reason."""

    name: str
    model: str
    gpu: str
    gpus_per_replica: int
    precision: Literal["bf16", "fp16", "fp8", "fp4"]  # as ServiceProfile.precision
    backend: str
    selection: PerfSelection
    kv: KvBudget
    kv_note: str
    max_batch: int
    max_batch_note: str
    cold_start: tuple[StageSpec, ...]
    warm_wake: StageSpec
    readme_target: str  # README §5's numbers for this configuration, quoted
    readme_shapes: tuple[tuple[int, int], ...]  # the (isl, osl) the README's numbers are for
    notes: tuple[str, ...] = field(default_factory=tuple)


# The occasional stages, the same for both sizes; their probabilities: see COLD_START_PROBABILITIES.
NEW_NODE_STAGE = StageSpec(
    "gpu_node_provisioning",
    80,
    100,
    120,
    P_NEW_NODE,
    f"{COLD_START_FILE} id=tf_node (80-120 s, cloud provider boots a new GPU instance); mode = midpoint; "
    f"README §5 'a new GPU node adds 80-120'. probability {P_NEW_NODE}: assumed warm node pool, see FITS.md",
)
UNCACHED_IMAGE_STAGE = StageSpec(
    "image_pull_uncached",
    300,
    420,
    600,
    P_IMAGE_UNCACHED,
    f"{COLD_START_FILE} ids=bento_pull (300-360 s for a 20.2 GB image) + bento_extract (180-240 s), "
    f"tf_pull10gb (420-600 s, 10 GB image); README §5 'an uncached image adds 300-600'; mode = tf_pull10gb low. "
    f"probability {P_IMAGE_UNCACHED} = P(new node) 0.2 x P(image not pre-pulled) 0.5, see FITS.md",
)

# The base stages (always present), split so their lows, modes and highs add up to README §5's
# totals for "node up, image cached": 8B 25 / 60 / 120 s, 70B 120 / 240 / 420 s.
BASE_STAGES: dict[str, tuple[StageSpec, ...]] = {
    "8b": (
        StageSpec(
            "weight_load",
            3,
            15,
            40,
            1.0,
            f"{COLD_START_FILE} ids=ice_Llama-2-7B_weights_uncached (29.3 s cold page cache, 1.8 s warm), "
            "ice_Qwen-7B_weights_uncached (9.4 s), runai_io2_streamer / runai_gp3_streamer (7.5-14.3 s, 15 GB), "
            "runai_gp3_safetensors (48 s, A10G): low = page cache warm, mode = streamer/local NVMe, high = cold disk",
        ),
        StageSpec(
            "compile_and_cuda_graphs",
            8,
            20,
            45,
            1.0,
            f"{COLD_START_FILE} ids=ice_*_compile_uncached (19-30 s without compile cache, 3.7-5.9 s with), "
            "vllm20264_torch_compile (7.5 s cached) + vllm20264_cuda_graph_capture (17 s), vllm20098_graph (>10 s): "
            "low = cached compile + few graphs, mode = cached compile + default graphs, high = no compile cache",
        ),
        StageSpec(
            "engine_start",
            14,
            25,
            35,
            1.0,
            f"{COLD_START_FILE} ids=ice_bootstrap (6-8 s), ice_kvprof_uncached (6-16 s; warm 1.4-2.1), k8s_slo "
            "(pod start <= 5 s p99), vllm20264_pod_start_to_first_response (59 s) - vllm20264_engine_init_total "
            "(34 s) = ~25 s not in the engine log (API server, readiness probe)",
        ),
    ),
    "70b": (
        StageSpec(
            "weight_load",
            20,
            60,
            150,
            1.0,
            f"{COLD_START_FILE} ids=vllm19824_weight_load_to_gpu (10 s, 70B FP8 from hot page cache), "
            "sllm_load_llama2_70b (84 s for 130 GB from local storage -> ~45 s for 73 GB), sllm_download "
            "(26 s for 130 GB at 5 GB/s): low = warm page cache, mode = local NVMe, high = network volume",
        ),
        StageSpec(
            "compile_and_cuda_graphs",
            60,
            130,
            200,
            1.0,
            f"{COLD_START_FILE} ids=vllm19824_p2p_access_check (60 s, avoidable), vllm19824_dynamo_bytecode_transform "
            "(15 s), vllm19824_torch_compile (70 s), vllm19824_cuda_graph_capture (60 s) for Llama-70B-FP8 TP8 "
            "without compile cache = 205 s: high = all of it, mode = with a shared compile cache, low = P2P check skipped too",
        ),
        StageSpec(
            "engine_start",
            40,
            50,
            70,
            1.0,
            f"{COLD_START_FILE} ids=ice_bootstrap (6-8 s), ice_kvprof_uncached (6-16 s), k8s_slo (<= 5 s), "
            "vllm20264_pod_start_to_first_response - engine_init_total (~25 s); plus tensor-parallel worker start "
            "and NCCL init for 4 GPUs (~10-20 s, assumed)",
        ),
    ),
}


def _cold_start_stages(size: str) -> tuple[StageSpec, ...]:
    """Stages of a replica's start, as triangular (low, mode, high) seconds."""
    return (NEW_NODE_STAGE, UNCACHED_IMAGE_STAGE, *BASE_STAGES[size])


WARM_WAKE = StageSpec(
    "warm_wake",
    3,
    8,
    20,
    1.0,
    "derived, not measured: no row times a sleep-mode wake (the data README states no wake time). "
    f"Measured parts, {COLD_START_FILE}: weights back from host memory as a warm page cache reloads them, "
    "ids=ice_*_weights_uncached warm 0.14-3.51 s (0.5-13B); KV cache re-allocation, id=ice_kvprof_uncached "
    "warm 1.4-2.1 s; together ~2-6 s. low 3 s: also id=dynamo_snapshot (restore up to 21x faster than a "
    "cold start: 60 s / 21 ~ 3 s). mode 8 s and high 20 s add readiness (probe period, Service endpoints), "
    "which no row measures",
)


SPECS: dict[str, ProfileSpec] = {
    "llama-3.1-8b-h100": ProfileSpec(
        name="llama-3.1-8b-h100",
        model="meta-llama/Llama-3.1-8B-Instruct",
        gpu="H100-SXM-80GB",
        gpus_per_replica=1,
        precision="bf16",
        backend="trtllm",
        selection=PerfSelection("meta-llama/Llama-3.1-8B-Instruct", "h100_sxm", "trtllm", 1, ""),
        kv=KvBudget(
            gpus=1, weights_bytes=LLAMA_8B_BF16_WEIGHTS, kv_bytes_per_token=LLAMA_8B_KV_BF16
        ),
        kv_note=(
            "bf16 KV (vLLM kv_cache_dtype=auto), 128 KiB/token = 2 x 32 layers x 8 KV heads x 128 x 2 B; "
            "0.9 x 79.11 GiB - 2.0 GiB overhead - 14.96 GiB weights (8.03e9 x 2 B)"
        ),
        max_batch=256,
        max_batch_note=(
            "256 = --max-num-seqs 256, the vLLM V0 / small-GPU default and a common production pin. vLLM V1 on "
            ">= 70 GiB GPUs other than A100 defaults to 1024 (arg_utils get_batch_defaults); the data stop at c = 128 "
            "(8B) and c = 64 (70B), so they cannot tell, and 256 keeps the model's extrapolation to within 2x of the data"
        ),
        cold_start=_cold_start_stages("8b"),
        warm_wake=WARM_WAKE,
        readme_target=(
            "TPOT ~ 6.7 ms + 0.10-0.20 ms x c (~1k-token prompts; slope ~0.37 with 4k prompts); TTFT 0.13-0.55 s "
            "for c <= 64 with 1k prompts, 0.6-0.9 s with 4k; output 3-6.6k tok/s at c = 64-128"
        ),
        readme_shapes=((1024, 128), (1024, 256), (1024, 512), (4096, 512)),
        notes=(
            "No H100 row of the 8B model was measured with vLLM: the 42 h100_sxm tp1 rows are TensorRT-LLM 1.0.0rc3 "
            "with the bf16 checkpoint (precision column empty, gemm_quant_mode empty), the same rows README §5 "
            "distils. The profile is labelled backend=trtllm. Where both backends were measured (70B FP8 "
            "on H200), vLLM's TPOT is 1.2-1.4x TRT-LLM's at tp 2 and 4 (see the backend-gap table).",
            "The FP8 8B rows (nvidia/Llama-3.1-8B-Instruct-FP8) exist only on H200 with one point per (isl, osl), "
            "so they were not used.",
        ),
    ),
    "llama-3.1-70b-fp8-4xh100": ProfileSpec(
        name="llama-3.1-70b-fp8-4xh100",
        model="meta-llama/Llama-3.1-70B (FP8)",
        gpu="H100-SXM-80GB",
        gpus_per_replica=4,
        precision="fp8",
        backend="vllm",
        selection=PerfSelection("meta-llama/Llama-3.1-70B", "h100_sxm", "vllm", 4, "fp8"),
        kv=KvBudget(
            gpus=4, weights_bytes=LLAMA_70B_FP8_WEIGHTS, kv_bytes_per_token=LLAMA_70B_KV_BF16
        ),
        kv_note=(
            "bf16 KV (vLLM kv_cache_dtype=auto keeps the activation dtype for an FP8-weight model), 320 KiB/token = "
            "2 x 80 layers x 8 KV heads x 128 x 2 B over the replica; 4 x (0.9 x 79.11 - 2.0) GiB - 67.7 GiB weights "
            "(FP8 body 68.4e9 x 1 B + bf16 embed/lm_head 2.1e9 x 2 B). FP8 KV would double the capacity, but then the "
            "tp2 rows would not explode where they do (see the knee check)"
        ),
        max_batch=256,
        max_batch_note="as for llama-3.1-8b-h100",
        cold_start=_cold_start_stages("70b"),
        warm_wake=WARM_WAKE,
        readme_target=(
            "TPOT ~ 11.3 + 0.13 x c ms (1k/1k), ~3.3k tok/s at c = 64, TTFT 0.08-0.26 s; with 8k prompts TPOT "
            "13 -> 53 ms and TTFT 0.45 -> 1.7 s for c 4 -> 64"
        ),
        readme_shapes=((1024, 1024), (8192, 1024)),
        notes=(
            "The exact configuration is measured: 15 rows (3 (isl, osl) pairs x c = 4..64), vLLM, FP8, "
            "h100_sxm, tp4, measured 2025-10-29. No fallback to H200 or to README numbers was needed.",
        ),
    ),
}


def _read_csv(data_dir: Path, name: str) -> pd.DataFrame:
    path = Path(data_dir) / name
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise InputError(
            str(path), "file not found (the calibration data live in ../shared/data)"
        ) from None


def _spec(name: str) -> ProfileSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise InputError(
            name, f"no fit spec for this profile; known: {', '.join(sorted(SPECS))}"
        ) from None


def flag_points(points: pd.DataFrame, kv_cache_tokens: int, max_batch: int) -> pd.DataFrame:
    """Add the exclusion flags of the module docstring to points with columns isl, osl,
    concurrency, ttft_ms, tpot_ms (one (isl, osl) group per request shape)."""
    pts = points.sort_values(["isl", "osl", "concurrency"]).reset_index(drop=True).copy()
    pts["ctx_tokens"] = pts["isl"] + pts["osl"] / 2.0
    pts["prompt_per_output"] = pts["isl"] / pts["osl"]
    pts["kv_demand_tokens"] = pts["concurrency"] * pts["ctx_tokens"]
    pts["above_knee"] = (pts["kv_demand_tokens"] > kv_cache_tokens) | (
        pts["concurrency"] > max_batch
    )
    prev_ttft = pts.groupby(["isl", "osl"])["ttft_ms"].shift(1)
    pts["exploded"] = (pts["ttft_ms"] > TTFT_EXPLOSION_RATIO * prev_ttft).fillna(False).astype(bool)
    # once exploded, every more concurrent point of the group is past the knee too
    pts["exploded"] = pts.groupby(["isl", "osl"])["exploded"].cummax().astype(bool)
    below = ~pts["above_knee"] & ~pts["exploded"]
    warmup = pd.Series(False, index=pts.index)
    for _, g in pts[below].groupby(["isl", "osl"]):
        first_min = g["ttft_ms"].idxmin()
        warmup[g.index[g.index < first_min]] = True
    pts["warmup"] = warmup
    pts["used_tpot"] = below
    pts["used_ttft"] = below & ~warmup
    pts["excluded"] = np.select(
        [pts["above_knee"], pts["exploded"], pts["warmup"]],
        ["above KV knee", "TTFT exploded", "TTFT warm-up"],
        "",
    )
    return pts


def measured_points(data_dir: Path | str, name: str) -> pd.DataFrame:
    """The measured points a shipped profile is fitted from, with the fit's exclusion flags.

    Columns: row (0-based data row of the CSV), id, isl, osl, concurrency, ttft_ms, tpot_ms,
    ctx_tokens, prompt_per_output, kv_demand_tokens, above_knee, exploded, warmup, used_tpot,
    used_ttft, excluded (reason, or "")."""
    spec = _spec(name)
    perf = _read_csv(Path(data_dir), PERF_FILE)
    rows = spec.selection.apply(perf)
    if rows.empty:
        raise InputError(
            str(Path(data_dir) / PERF_FILE), f"no rows match {spec.selection.describe()}"
        )
    points = pd.DataFrame(
        {
            "row": rows.index.to_numpy(),
            "id": rows["id"].to_numpy(),
            "isl": rows["isl"].to_numpy(dtype=float),
            "osl": rows["osl"].to_numpy(dtype=float),
            "concurrency": rows["batch_size"].to_numpy(dtype=float),
            "ttft_ms": rows["silicon_ttft_ms"].to_numpy(dtype=float),
            "tpot_ms": rows["silicon_tpot_ms"].to_numpy(dtype=float),
        }
    )
    return flag_points(points, spec.kv.kv_cache_tokens, spec.max_batch)


@dataclass(frozen=True)
class Fit:
    coef: dict[str, float]
    r2: float
    n_points: int


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    return float(1.0 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))


def _tpot_design(pts: pd.DataFrame) -> np.ndarray:
    c = pts["concurrency"].to_numpy()
    return np.column_stack(
        [
            np.ones_like(c),
            c,
            c * pts["ctx_tokens"].to_numpy() / 1000.0,
            c * pts["prompt_per_output"].to_numpy(),
        ]
    )


def fit_tpot(points: pd.DataFrame) -> Fit:
    pts = points[points["used_tpot"]]
    a, y = _tpot_design(pts), pts["tpot_ms"].to_numpy()
    res = lsq_linear(a, y, bounds=(0.0, np.inf), method="bvls")
    names = (
        "tpot_base_ms",
        "tpot_ms_per_seq",
        "tpot_ms_per_seq_per_ktok",
        "tpot_ms_per_prefill_token",
    )
    return Fit(dict(zip(names, map(float, res.x), strict=True)), _r2(y, a @ res.x), len(pts))


def fit_tpot_plain(points: pd.DataFrame) -> Fit:
    """The model without the prefill term, for the record in FITS.md (why the term is there)."""
    pts = points[points["used_tpot"]]
    a, y = _tpot_design(pts)[:, :3], pts["tpot_ms"].to_numpy()
    res = lsq_linear(a, y, bounds=(0.0, np.inf), method="bvls")
    names = ("tpot_base_ms", "tpot_ms_per_seq", "tpot_ms_per_seq_per_ktok")
    return Fit(dict(zip(names, map(float, res.x), strict=True)), _r2(y, a @ res.x), len(pts))


def fit_ttft(points: pd.DataFrame, max_batch: int) -> Fit:
    pts = points[points["used_ttft"]]
    isl, c = pts["isl"].to_numpy(), pts["concurrency"].to_numpy()
    a, y = np.column_stack([np.ones_like(isl), isl, isl * c]), pts["ttft_ms"].to_numpy()
    # start from the relative least-squares solution, then down-weight what stays far off
    x0 = lsq_linear(a / y[:, None], np.ones_like(y), bounds=(0.0, np.inf), method="bvls").x
    res = least_squares(
        lambda th: (a @ th - y) / y,
        np.maximum(x0, 1e-9),
        bounds=(0.0, np.inf),
        loss="soft_l1",
        f_scale=TTFT_LOSS_SCALE,
    )
    base, per_token, per_token_per_seq = map(float, res.x)
    coef = {
        "prefill_base_ms": base,
        "prefill_ms_per_token": per_token,
        "prefill_interference": per_token_per_seq * max_batch / per_token,
    }
    return Fit(coef, _r2(y, a @ res.x), len(pts))


def _sig(x: float, digits: int = 5) -> float:
    return 0.0 if x == 0 else round(x, digits - 1 - math.floor(math.log10(abs(x))))


def typical_request(data_dir: Path) -> tuple[int, int]:
    conv = _read_csv(data_dir, CONV_TRACE_FILE)
    return round(conv["ContextTokens"].mean()), round(conv["GeneratedTokens"].mean())


def h100_price_rows(data_dir: Path) -> pd.DataFrame:
    """Current on-demand H100 quotes: the stale pre-cut AWS list price, reserved and capacity-block
    rows are left out."""
    prices = _read_csv(data_dir, PRICES_FILE)
    mask = (
        prices["gpu"].str.contains("H100")
        & prices["pricing"].str.contains("on-demand")
        & ~prices["as_of"].str.contains("stale")
    )
    out = prices[mask].copy()
    out["mid"] = (out["usd_per_gpu_hour_low"] + out["usd_per_gpu_hour_high"]) / 2.0
    return out


H100_USD_PER_GPU_HOUR = 3.00  # README §5; checked against the on-demand quotes in h100_price_rows


@dataclass(frozen=True)
class ProfileFit:
    spec: ProfileSpec
    profile: ServiceProfile
    points: pd.DataFrame
    tpot: Fit
    tpot_plain: Fit
    ttft: Fit
    closed_form: ServiceProfile  # `profile` with the closed-form fits' coefficients
    engine: dict[str, Any] | None = None  # its engine_fit.json record, if any


def engine_fit_record(name: str) -> dict[str, Any] | None:
    """The engine calibration of profile `name` in engine_fit.json, or None."""
    path = PROFILE_DIR / ENGINE_FIT_FILE
    if not path.exists():
        return None
    try:
        rec = json.loads(path.read_text())
        entry = rec["profiles"].get(name)
    except (ValueError, KeyError, AttributeError) as e:
        raise InputError(str(path), f"not an engine-fit record: {e}") from None
    if entry is None:
        return None
    return {"method": rec.get("method", ""), "generated_by": rec.get("generated_by", ""), **entry}


def fit_profile(data_dir: Path | str, name: str, engine_fit: bool = True) -> ProfileFit:
    data_dir = Path(data_dir)
    spec = _spec(name)
    points = measured_points(data_dir, name)
    tpot, ttft = fit_tpot(points), fit_ttft(points, spec.max_batch)
    latency = LatencyModel(
        **{k: _sig(v) for k, v in tpot.coef.items()},
        **{k: _sig(v) for k, v in ttft.coef.items()},
        kv_cache_tokens=spec.kv.kv_cache_tokens,
        max_batch=spec.max_batch,
    )
    prompt, output = typical_request(data_dir)
    price_rows = h100_price_rows(data_dir)
    sel = spec.selection.describe()
    used_rows = points.loc[points["used_tpot"], "row"]
    warm = points.loc[points["warmup"], "row"].tolist()
    sources = {
        "latency.tpot_*": (
            f"{sel}; {len(used_rows)} rows (data rows {used_rows.min()}-{used_rows.max()}, 0-based); "
            "least squares with coefficients >= 0 on silicon_tpot_ms vs batch_size, ctx = isl + osl/2; see FITS.md"
        ),
        "latency.prefill_*": (
            f"same rows less {len(warm)} TTFT warm-up rows {warm} (before their (isl, osl) group's TTFT minimum); "
            "soft-L1 fit of relative silicon_ttft_ms residuals; see FITS.md"
        ),
        "latency.kv_cache_tokens": f"derived, not measured: {spec.kv_note}; checked against the data's knees in FITS.md",
        "latency.max_batch": spec.max_batch_note,
        **{f"cold_start.{s.name}": s.source for s in spec.cold_start},
        "warm_wake": spec.warm_wake.source,
        "gpu_usd_per_hour": (
            f"README §5 'H100 $3.00 per GPU-hour (sensitivity $2-6)'; {PRICES_FILE} on-demand H100 rows "
            f"{price_rows.index.tolist()} (0-based) have midpoints median "
            f"{price_rows['mid'].median():.2f}, range {price_rows['usd_per_gpu_hour_low'].min():.2f}-"
            f"{price_rows['usd_per_gpu_hour_high'].max():.2f}"
        ),
        "typical_prompt_tokens": (
            f"{CONV_TRACE_FILE}: mean ContextTokens over all {len(_read_csv(data_dir, CONV_TRACE_FILE))} rows "
            "(README §1: 1,155), the workload a chat service most resembles"
        ),
        "typical_output_tokens": f"{CONV_TRACE_FILE}: mean GeneratedTokens (README §1: 211)",
        "fit_report": "FITS.md beside this file; regenerate with rlscale profiles fit",
    }
    profile = ServiceProfile(
        name=spec.name,
        model=spec.model,
        gpu=spec.gpu,
        gpus_per_replica=spec.gpus_per_replica,
        precision=spec.precision,
        backend=spec.backend,
        latency=latency,
        cold_start=[s.stage() for s in spec.cold_start],
        warm_wake=spec.warm_wake.stage(),
        gpu_usd_per_hour=H100_USD_PER_GPU_HOUR,
        typical_prompt_tokens=prompt,
        typical_output_tokens=output,
        sources=sources,
    )
    closed = profile
    engine = engine_fit_record(name) if engine_fit else None
    if engine is not None and engine.get("shipped"):
        coef = {k: float(v) for k, v in engine["coef"].items()}
        profile = profile.model_copy(
            update={
                "latency": LatencyModel(**{**profile.latency.model_dump(), **coef}),
                "sources": {
                    **sources,
                    "latency.tpot_*": (
                        f"engine fit ({ENGINE_FIT_FILE}): {engine['method']}; same rows as the "
                        "closed-form fit, which FITS.md reports beside it"
                    ),
                    "latency.prefill_base_ms": (
                        f"engine fit ({ENGINE_FIT_FILE}), the TTFT overhead off the GPU; "
                        "prefill_ms_per_token and prefill_interference stay the closed-form "
                        "TTFT fit's (the engine does not use them)"
                    ),
                },
            }
        )
    return ProfileFit(spec, profile, points, tpot, fit_tpot_plain(points), ttft, closed, engine)


def prediction_errors(profile: ServiceProfile, points: pd.DataFrame) -> pd.DataFrame:
    """Measured vs predicted TPOT and TTFT per point; errors in percent of the measured value."""
    out = points.copy()
    out["tpot_pred_ms"] = profile.tpot_ms(
        out["concurrency"], out["ctx_tokens"], out["prompt_per_output"]
    )
    out["ttft_pred_ms"] = profile.ttft_ms(out["concurrency"], out["isl"])
    out["tpot_err_pct"] = 100.0 * (out["tpot_pred_ms"] - out["tpot_ms"]) / out["tpot_ms"]
    out["ttft_err_pct"] = 100.0 * (out["ttft_pred_ms"] - out["ttft_ms"]) / out["ttft_ms"]
    return out


@dataclass(frozen=True)
class ErrorSummary:
    n: int
    mape_pct: float
    max_abs_pct: float


def summarize(errors: pd.DataFrame, metric: str, used_only: bool = True) -> ErrorSummary:
    rows = errors[errors[f"used_{metric}"]] if used_only else errors
    e = rows[f"{metric}_err_pct"].abs()
    return ErrorSummary(len(rows), float(e.mean()), float(e.max()))


def knee_check(data_dir: Path | str) -> pd.DataFrame:
    """Every Llama-3.1-70B vLLM FP8 H100 row (tp 2, 4, 8): the KV budget's knee vs where TTFT
    explodes. tp2 is the only one the data push past the knee, and it brackets the capacity."""
    perf = _read_csv(Path(data_dir), PERF_FILE)
    out = []
    for tp in (2, 4, 8):
        rows = PerfSelection("meta-llama/Llama-3.1-70B", "h100_sxm", "vllm", tp, "fp8").apply(perf)
        kv = KvBudget(
            gpus=tp, weights_bytes=LLAMA_70B_FP8_WEIGHTS, kv_bytes_per_token=LLAMA_70B_KV_BF16
        )
        pts = pd.DataFrame(
            {
                "isl": rows["isl"].to_numpy(float),
                "osl": rows["osl"].to_numpy(float),
                "concurrency": rows["batch_size"].to_numpy(float),
                "ttft_ms": rows["silicon_ttft_ms"].to_numpy(float),
                "tpot_ms": rows["silicon_tpot_ms"].to_numpy(float),
            }
        )
        flagged = flag_points(pts, kv.kv_cache_tokens, max_batch=10**9)
        flagged.insert(0, "tp", tp)
        flagged.insert(1, "kv_cache_tokens", kv.kv_cache_tokens)
        flagged["kv_cache_tokens_fp8_kv"] = KvBudget(
            tp, LLAMA_70B_FP8_WEIGHTS, LLAMA_70B_KV_BF16 // 2
        ).kv_cache_tokens
        out.append(flagged)
    return pd.concat(out, ignore_index=True)


def backend_gap(data_dir: Path | str) -> pd.DataFrame:
    """TPOT lines of vLLM vs TRT-LLM where both were measured on the same GPU, model and TP."""
    fits = _read_csv(Path(data_dir), PERF_FITS_FILE)
    sel = fits[(fits["model"] == "meta-llama/Llama-3.1-70B") & (fits["gpu"] == "h200_sxm")]
    keys = ["tp", "isl", "osl"]
    wide = sel.pivot_table(
        index=keys, columns="backend", values=["tpot_fit_a_ms", "tpot_fit_b_ms_per_conc"]
    )
    wide.columns = [f"{m}_{b}" for m, b in wide.columns]
    wide = wide.dropna().reset_index()
    for c in (8, 64):
        v = wide["tpot_fit_a_ms_vllm"] + c * wide["tpot_fit_b_ms_per_conc_vllm"]
        t = wide["tpot_fit_a_ms_trtllm"] + c * wide["tpot_fit_b_ms_per_conc_trtllm"]
        wide[f"vllm_over_trtllm_c{c}"] = v / t
    return wide


def group_lines(data_dir: Path | str, fit: ProfileFit) -> pd.DataFrame:
    """perf_calibration_fits' per-(isl, osl) TPOT line a + b*c beside the line the profile implies."""
    fits = _read_csv(Path(data_dir), PERF_FITS_FILE)
    s = fit.spec.selection
    precision = s.precision or "unspecified"
    rows = fits[
        (fits["model"] == s.model_path)
        & (fits["gpu"] == s.system)
        & (fits["backend"] == s.backend)
        & (fits["precision"] == precision)
        & (fits["tp"] == s.tp_size)
    ].copy()
    lat = fit.closed_form.latency
    ctx = rows["isl"] + rows["osl"] / 2.0
    rows["model_a_ms"] = lat.tpot_base_ms
    rows["model_b_ms_per_conc"] = (
        lat.tpot_ms_per_seq
        + lat.tpot_ms_per_seq_per_ktok * ctx / 1000.0
        + lat.tpot_ms_per_prefill_token * rows["isl"] / rows["osl"]
    )
    return rows[
        [
            "isl",
            "osl",
            "n_points",
            "tpot_fit_a_ms",
            "tpot_fit_b_ms_per_conc",
            "tpot_fit_r2",
            "model_a_ms",
            "model_b_ms_per_conc",
        ]
    ]


def _md_table(df: pd.DataFrame, floatfmt: dict[str, str] | None = None) -> str:
    floatfmt = floatfmt or {}
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in df.iterrows():
        cells = []
        for col in cols:
            v = r[col]
            if isinstance(v, float | np.floating) and col not in floatfmt and float(v).is_integer():
                cells.append(f"{int(v)}")
            elif isinstance(v, float | np.floating):
                cells.append(format(v, floatfmt.get(col, ".3g")))
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _header_md() -> list[str]:
    return [
        "# Shipped profile fits",
        "",
        "Generated by `rlscale profiles fit --data ../shared/data --out rlscale/profiles`; do not edit by",
        "hand. Data: ../shared/data (see its README for licences and citations: the latency points are NVIDIA",
        "AIConfigurator's `silicon_sample.csv`, Apache-2.0). Method: see the docstring of `rlscale/profiles/fit.py`.",
        "",
        "Latency model (rlscale/profiles/model.py), c = requests in flight, ctx = isl + osl/2, r = isl/osl:",
        "",
        "    TPOT_ms = tpot_base_ms + (tpot_ms_per_seq + tpot_ms_per_seq_per_ktok*ctx/1000 + tpot_ms_per_prefill_token*r) * c",
        "    TTFT_ms = prefill_base_ms + prefill_ms_per_token * isl * (1 + prefill_interference * c / max_batch)",
        "",
        "The `r` term is new with these fits: chunked prefill runs the prompts of arriving requests inside",
        "decode steps, c*r prompt tokens per step in steady state. Without it the plain model misses the",
        "measured TPOT badly (each section gives the plain fit's errors), because at a fixed prompt length",
        "TPOT *falls* as outputs get longer, which a context-length term cannot produce.",
        "",
        "Which points each fit uses (flags in the per-point tables): a row *above the KV knee* (KV demand",
        "c*(isl + osl/2) > kv_cache_tokens, or c > max_batch) or whose TTFT *exploded* (> 4x the previous,",
        "half as concurrent, point of its (isl, osl) group) is left out of both fits; a *warm-up* row (at a",
        "lower concurrency than its group's minimum TTFT; TTFT cannot fall as concurrency rises, README §2",
        "calls these warm-up artefacts) is left out of the TTFT fit only. The TTFT fit is a soft-L1 fit of",
        "relative residuals (scale 5 %), so the remaining noisy points weigh like a median, not a mean.",
        "",
        "Error tables: error = (predicted - measured) / measured. MAPE and max are over the points the fit",
        "used (`used` column); the excluded points are listed with the reason and are predicted too.",
        "",
    ]


def _profile_facts_md(f: ProfileFit) -> list[str]:
    """Filter, notes, KV budget, max_batch, and where the data sit against the knee."""
    p, lat, pts = f.profile, f.profile.latency, f.points
    densest = pts.loc[pts["kv_demand_tokens"].idxmax()]
    kv_only = lat.kv_cache_tokens / (p.typical_prompt_tokens + p.typical_output_tokens / 2)
    return [
        f"## {p.name}",
        "",
        f"- **Filter**: `{f.spec.selection.describe()}` -> {len(pts)} rows.",
        *[f"- {n}" for n in f.spec.notes],
        f"- **KV cache**: {lat.kv_cache_tokens:,} tokens; {f.spec.kv_note}.",
        f"- **max_batch**: {lat.max_batch}; {f.spec.max_batch_note}.",
        f"- **Knee**: highest KV demand among the rows is {pts['kv_demand_tokens'].max():,.0f} tokens "
        f"(c = {densest['concurrency']:.0f}, isl {densest['isl']:.0f}, osl {densest['osl']:.0f}), "
        f"{'above' if pts['above_knee'].any() else 'below'} the capacity; "
        f"{int(pts['exploded'].sum())} rows exploded. At the typical request "
        f"({p.typical_prompt_tokens:.0f} / {p.typical_output_tokens:.0f} tokens) the knee is "
        f"c = {p.max_concurrency():.0f} (KV alone: {kv_only:.0f}).",
        "",
    ]


def _coefficients_md(f: ProfileFit) -> list[str]:
    lat = f.closed_form.latency

    def row(label: str, fit: Fit, coef: dict[str, float]) -> str:
        terms = ", ".join(f"{k} = {v:.5g}" for k, v in coef.items())
        return f"| {label} | {fit.n_points} | {terms} | {fit.r2:.4f} |"

    return [
        "| fit | points | coefficients | R² |",
        "|---|---|---|---|",
        row("TPOT", f.tpot, {k: getattr(lat, k) for k in f.tpot.coef}),
        row("TPOT without the r term (not shipped)", f.tpot_plain, f.tpot_plain.coef),
        row("TTFT", f.ttft, {k: getattr(lat, k) for k in f.ttft.coef}),
        "",
    ]


def _error_summary_md(f: ProfileFit, err: pd.DataFrame) -> list[str]:
    """MAPE and max over the points each fit used, over all rows, and the plain TPOT model's."""
    st, sq = summarize(err, "tpot"), summarize(err, "ttft")
    st_all, sq_all = summarize(err, "tpot", False), summarize(err, "ttft", False)
    plain = f.points.copy()
    a = _tpot_design(plain)[:, :3] @ np.array(list(f.tpot_plain.coef.values()))
    plain_err = np.abs(a - plain["tpot_ms"]) / plain["tpot_ms"] * 100
    used = plain["used_tpot"]
    return [
        "| metric | points | MAPE % | max abs error % | all rows: MAPE % / max % |",
        "|---|---|---|---|---|",
        f"| TPOT | {st.n} | {st.mape_pct:.1f} | {st.max_abs_pct:.1f} | {st_all.mape_pct:.1f} / {st_all.max_abs_pct:.1f} |",
        f"| TTFT | {sq.n} | {sq.mape_pct:.1f} | {sq.max_abs_pct:.1f} | {sq_all.mape_pct:.1f} / {sq_all.max_abs_pct:.1f} |",
        "",
        f"Plain TPOT model (no r term) on the same points: MAPE {plain_err[used].mean():.1f} %, "
        f"max {plain_err[used].max():.1f} %.",
        "",
    ]


_PER_POINT_COLUMNS = [
    "row",
    "isl",
    "osl",
    "concurrency",
    "tpot_ms",
    "tpot_pred_ms",
    "tpot_err_pct",
    "ttft_ms",
    "ttft_pred_ms",
    "ttft_err_pct",
    "excluded",
]


def _per_point_md(err: pd.DataFrame) -> list[str]:
    table = err[_PER_POINT_COLUMNS].copy()
    table["excluded"] = table["excluded"].replace("", "used")
    table = table.rename(columns={"concurrency": "c", "excluded": "TTFT fit"})
    for col in ("isl", "osl", "c"):
        table[col] = table[col].astype(int)
    return [
        "<details><summary>per-point errors</summary>",
        "",
        _md_table(table, {c: ".1f" for c in table.columns if c.endswith(("_ms", "_pct"))}),
        "",
        "</details>",
        "",
    ]


def _group_lines_md(data_dir: Path, f: ProfileFit) -> list[str]:
    return [
        "perf_calibration_fits_aiconfigurator.csv per-group TPOT lines (a + b*c) beside the profile's:",
        "",
        _md_table(
            group_lines(data_dir, f),
            {
                "tpot_fit_a_ms": ".2f",
                "model_a_ms": ".2f",
                "tpot_fit_b_ms_per_conc": ".4f",
                "model_b_ms_per_conc": ".4f",
            },
        ),
        "",
    ]


def _readme_targets_md(f: ProfileFit) -> list[str]:
    """The profile at README §5's request shapes, beside README §5's numbers."""
    p, lat = f.profile, f.profile.latency
    out = [
        f"README §5 sanity targets: {f.spec.readme_target}. The profile at those request shapes:",
        "",
    ]
    for isl, osl in f.spec.readme_shapes:
        ctx, r = isl + osl / 2.0, isl / osl
        slope = float(p.tpot_ms(1, ctx, r)) - lat.tpot_base_ms
        tok_s = ", ".join(f"{c * 1e3 / float(p.tpot_ms(c, ctx, r)):,.0f}" for c in (64, 128))
        ttft = ", ".join(f"{float(p.ttft_ms(c, isl)) / 1e3:.3f}" for c in (4, 8, 16, 32, 64))
        out.append(
            f"- {isl}/{osl}: TPOT {lat.tpot_base_ms:.2f} + {slope:.3f} x c ms; output tok/s at c = 64, 128: "
            f"{tok_s}; TTFT at c = 4, 8, 16, 32, 64: {ttft} s."
        )
    return out


def _typical_and_cold_start_md(f: ProfileFit) -> list[str]:
    p, lat = f.profile, f.profile.latency
    typical_slope = (
        float(p.tpot_ms(1, p.typical_prompt_tokens + p.typical_output_tokens / 2))
        - lat.tpot_base_ms
    )
    stages = "; ".join(
        f"{s.name} {s.low_s:g}/{s.mode_s:g}/{s.high_s:g} p={s.probability:g}" for s in p.cold_start
    )
    return [
        "",
        f"At the typical request ({p.typical_prompt_tokens:.0f} / {p.typical_output_tokens:.0f} tokens): TPOT "
        f"{lat.tpot_base_ms:.2f} + {typical_slope:.3f}"
        f" x c ms; capacity_rps {p.capacity_rps():.2f} req/s per replica at c = {p.max_concurrency():.0f} "
        f"(${p.replica_usd_per_hour:.2f}/h per replica).",
        "",
        f"Cold start: mean {p.mean_cold_start_s:.1f} s; stages (low / mode / high s, probability): "
        + stages
        + f". Warm wake {p.warm_wake.low_s:g}/{p.warm_wake.mode_s:g}/{p.warm_wake.high_s:g} s.",
        "",
    ]


def _profile_md(data_dir: Path, f: ProfileFit) -> list[str]:
    err = prediction_errors(f.closed_form, f.points)
    return [
        *_profile_facts_md(f),
        *_coefficients_md(f),
        *_error_summary_md(f, err),
        *_per_point_md(err),
        *_engine_md(f),
        *_group_lines_md(data_dir, f),
        *_readme_targets_md(f),
        *_typical_and_cold_start_md(f),
    ]


def _engine_md(f: ProfileFit) -> list[str]:
    """The engine calibration (engine_fit.json) of this profile, if there is one."""
    e = f.engine
    if e is None:
        return []
    names = list(e["coef"])
    closed = f.closed_form.latency
    rows = [
        "| coefficients | " + " | ".join(names) + " | TTFT MAPE % | TPOT MAPE % | "
        "vs Vidur TTFT % | vs Vidur TPOT % |",
        "|---|" + "---|" * (len(names) + 4),
    ]
    for key, label, coef in (
        ("closed_form", "closed-form fit", {k: getattr(closed, k) for k in names}),
        ("engine_fit", "engine fit", e["coef"]),
    ):
        rows.append(
            f"| {label} | "
            + " | ".join(f"{coef[k]:.5g}" for k in names)
            + f" | {e[key + '_ttft_mape_pct']:.1f} | {e[key + '_tpot_mape_pct']:.1f} | "
            f"{e['vidur_' + key + '_ttft_mape_pct']:.1f} | {e['vidur_' + key + '_tpot_mape_pct']:.1f} |"
        )
    sens = "; ".join(
        f"{k} prompts per client: TTFT {v['closed_form']['ttft_mape_pct']:.1f} / "
        f"{v['engine_fit']['ttft_mape_pct']:.1f}, TPOT {v['closed_form']['tpot_mape_pct']:.1f} / "
        f"{v['engine_fit']['tpot_mape_pct']:.1f}"
        for k, v in e["sensitivity"].items()
    )
    per_point = pd.DataFrame(e["per_point"])
    shipped = (
        "shipped in the YAML; the closed-form tables above describe the closed-form coefficients"
        if e["shipped"]
        else "not shipped; the YAML keeps the closed-form coefficients"
    )
    # the benchmark length of the measured points is unknown, so a fit that wins only at one
    # assumed length is not a better model of the replica
    settings = [
        (e["closed_form_ttft_mape_pct"], e["engine_fit_ttft_mape_pct"]),
        (e["closed_form_tpot_mape_pct"], e["engine_fit_tpot_mape_pct"]),
    ]
    for v in e["sensitivity"].values():
        for m in ("ttft_mape_pct", "tpot_mape_pct"):
            settings.append((v["closed_form"][m], v["engine_fit"][m]))
    wins = sum(fit < closed for closed, fit in settings)
    return [
        f"### Engine calibration ({shipped})",
        "",
        f"The engine fit has the lower MAPE in {wins} of {len(settings)} (metric, prompts per "
        "client) settings against the aiconfigurator points; against the Vidur-derived points "
        f"its TTFT MAPE is {e['vidur_engine_fit_ttft_mape_pct']:.1f} % vs "
        f"{e['vidur_closed_form_ttft_mape_pct']:.1f} %.",
        "",
        f"Method: {e['method']}. Generated by `{e['generated_by']}`. Points: {e['points']} "
        f"(TTFT on {e['ttft_points']}, the closed-form TTFT fit's). MAPE is of the engine's "
        "simulated benchmark against the measured point, for each set of coefficients. "
        f"Vidur-derived points: the same benchmarks with an iteration model from "
        f"{e['vidur_source']}, scaled x{e['vidur_scale_to_equal_capacity']} to the closed-form "
        "profile's capacity (benchmarks/calibration.py docstring); they share its TTFT overhead, "
        "KV-read term and capacity, so they lean towards the closed-form coefficients.",
        "",
        *rows,
        "",
        f"Sensitivity (closed-form / engine fit MAPE %, re-simulated): {sens}.",
        "",
        "<details><summary>per-point engine results (ms)</summary>",
        "",
        _md_table(per_point),
        "",
        "</details>",
        "",
    ]


_KNEE_COLUMNS = [
    "tp",
    "kv_cache_tokens",
    "kv_cache_tokens_fp8_kv",
    "isl",
    "osl",
    "concurrency",
    "kv_demand_tokens",
    "ttft_ms",
    "above_knee",
    "exploded",
]


def _knee_md(data_dir: Path) -> list[str]:
    knees = knee_check(data_dir)
    eight_b = measured_points(data_dir, "llama-3.1-8b-h100")
    return [
        "## KV-cache knee check (Llama-3.1-70B, vLLM FP8, H100, every TP the data has)",
        "",
        "`above_knee`: KV demand c*(isl + osl/2) > the budget's capacity (bf16 KV). `exploded`: TTFT > 4x the",
        "previous point of its group. They agree on every row: tp2 explodes exactly where its demand",
        "crosses the computed 231k-token capacity and nowhere else, which also settles the KV dtype: with",
        "FP8 KV (`kv_cache_tokens_fp8_kv`) the 8192/1024 c = 32 row (278k tokens) would fit, yet it explodes.",
        "tp4 (the shipped profile) and tp8 never cross their knees in the data. The 8B rows never reach",
        f"theirs (max demand {eight_b['kv_demand_tokens'].max():,.0f} of {SPECS['llama-3.1-8b-h100'].kv.kv_cache_tokens:,}"
        " tokens, no row exploded): consistent, but only a lower bound on its capacity.",
        "",
        _md_table(
            knees[_KNEE_COLUMNS],
            {
                "kv_demand_tokens": ".0f",
                "ttft_ms": ".0f",
                "isl": ".0f",
                "osl": ".0f",
                "concurrency": ".0f",
            },
        ),
        "",
        f"Agreement: {int((knees['above_knee'] == knees['exploded']).sum())} of {len(knees)} rows.",
        "",
    ]


def _backend_gap_md(data_dir: Path) -> list[str]:
    gap = backend_gap(data_dir)
    return [
        "## Backend gap (70B FP8, H200, perf_calibration_fits rows where both were measured)",
        "",
        "For the 8B profile's TRT-LLM fallback: how much slower vLLM's TPOT is on the same hardware.",
        "",
        _md_table(gap, {c: ".3g" for c in gap.columns}),
        "",
    ]


def _cold_start_probabilities_md() -> list[str]:
    return ["## Cold-start probabilities", "", COLD_START_PROBABILITIES, ""]


def _price_md(data_dir: Path) -> list[str]:
    prices = h100_price_rows(data_dir)
    return [
        "## Price",
        "",
        "Rows of gpu_prices_usd_per_hour.csv used (current on-demand H100 quotes; the stale pre-June-2025",
        f"AWS list price, the reserved and the capacity-block rows are left out). Shipped: ${H100_USD_PER_GPU_HOUR:.2f}",
        "per GPU-hour, README §5's recommendation, just under the median quote midpoint.",
        "",
        _md_table(
            prices[
                ["gpu", "usd_per_gpu_hour_low", "usd_per_gpu_hour_high", "mid", "as_of", "source"]
            ].reset_index(names="row"),
            {"mid": ".3f", "usd_per_gpu_hour_low": ".2f", "usd_per_gpu_hour_high": ".2f"},
        ),
        "",
        f"Median midpoint: {prices['mid'].median():.3f}.",
        "",
    ]


def render_fits_md(data_dir: Path | str, fits: Sequence[ProfileFit]) -> str:
    """FITS.md: the method, one section per profile, then the checks that are not per profile."""
    data_dir = Path(data_dir)
    out = _header_md()
    for f in fits:
        out += _profile_md(data_dir, f)
    out += (
        _knee_md(data_dir)
        + _backend_gap_md(data_dir)
        + _cold_start_probabilities_md()
        + _price_md(data_dir)
    )
    return "\n".join(out)


YAML_HEADER = (
    "# Generated by `rlscale profiles fit --data ../shared/data --out rlscale/profiles`.\n"
    "# Do not edit by hand: change fit.py and re-run. Every number's source is under `sources:`,\n"
    "# and the fit (points, R², per-point errors) is in FITS.md beside this file.\n"
)


def profile_yaml(profile: ServiceProfile) -> str:
    return YAML_HEADER + yaml.safe_dump(
        profile.model_dump(mode="json"), sort_keys=False, width=110, allow_unicode=True
    )


def render_all(data_dir: Path | str) -> dict[str, str]:
    """File name -> content of everything the fit writes."""
    fits = [fit_profile(data_dir, name) for name in SPECS]
    files = {f"{f.profile.name}.yaml": profile_yaml(f.profile) for f in fits}
    files["FITS.md"] = render_fits_md(data_dir, fits)
    return files


def default_data_dir() -> Path:
    """$RLSCALE_SHARED_DATA, else ../shared/data beside the checkout."""
    env = os.environ.get("RLSCALE_SHARED_DATA")
    return Path(env) if env else PROFILE_DIR.parents[2] / "shared" / "data"


def stale_files(files: dict[str, str], out_dir: Path) -> list[str]:
    """Names of `files` whose copy in out_dir is missing or differs."""
    return [
        n
        for n, text in files.items()
        if not (out_dir / n).exists() or (out_dir / n).read_text() != text
    ]


def write_files(files: dict[str, str], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / n for n in files]
    for path, text in zip(paths, files.values(), strict=True):
        path.write_text(text)
    return paths
