"""Trainer throughput: alignd's DPORecipe against TRL's DPOTrainer on the same model, tokenizer and rows.

The parent process builds one random-init Llama-style model (saved to a temporary directory with a
tokenizer trained on the synthetic corpus) and one JSONL file of long synthetic preference pairs, then
runs every (implementation, mode) in a fresh subprocess of this script so that peak-memory numbers
belong to that run alone. Each worker times the optimizer steps after `--warmup-steps`, end of step to
end of step, and writes its numbers as JSON; the parent prints the table. See bench/README.md.

    .venv/bin/python bench/trainer_bench.py --preset cpu-small --mode both --impl both
    python bench/trainer_bench.py --preset 1b --mode both --impl both --out-json bench-1b.json
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may touch the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import argparse
import json
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import peft
import torch
import transformers
import trl
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    PreTrainedTokenizerBase,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)
from trl import DPOConfig, DPOTrainer

from alignd.contract import (
    Hyperparameters,
    JobSpec,
    LoraSpec,
    LRScheduler,
    MetricPoint,
    Precision,
    TrainingType,
)
from alignd.contract.spec import DEFAULT_LEARNING_RATE
from alignd_trainer.distributed import DistInfo
from alignd_trainer.loop import DPORecipe
from alignd_trainer.model import lora_config, resolve_device, resolve_dtype
from alignd_trainer.report import Payload, Reporter
from alignd_trainer.synthetic import CATEGORIES, corpus, preference_rows, write_jsonl
from alignd_trainer.tiny_model import train_tokenizer

IMPLS = ("alignd", "trl")
MODES = ("lora", "full")
BETA = 0.1
SEED = 0

PEAK_BF16_TFLOPS = [("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0)]
"""Dense bf16 tensor-core peak per GPU, by substring of the device name; first match wins."""


@dataclass(frozen=True)
class Preset:
    """A Llama-style model shape and the run sizes that suit it."""

    vocab_size: int | None
    """None: the tokenizer's own size; otherwise a larger embedding the small tokenizer's ids fit in."""
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    seq_len: int
    batch_size: int
    steps: int
    warmup_steps: int
    repeats: int
    tie_embeddings: bool = False
    rope_theta: float = 10000.0


PRESETS: dict[str, Preset] = {
    # ≈3.1M parameters: well under a second per step on 2 idle CPU cores.
    "cpu-small": Preset(
        vocab_size=None,
        hidden=256,
        intermediate=688,
        layers=4,
        heads=4,
        kv_heads=2,
        seq_len=256,
        batch_size=4,
        steps=8,
        warmup_steps=2,
        repeats=3,
    ),
    # SmolLM2-135M's real shape (30 layers, hidden 576, 9/3 heads, tied 49,152-row embedding), random init.
    "smollm2-135m": Preset(
        vocab_size=49152,
        hidden=576,
        intermediate=1536,
        layers=30,
        heads=9,
        kv_heads=3,
        seq_len=128,
        batch_size=4,
        steps=2,
        warmup_steps=1,
        repeats=2,
        tie_embeddings=True,
        rope_theta=100000.0,
    ),
    # ≈0.47B parameters (Llama-2-style multi-head attention, 24 layers).
    "0.5b": Preset(
        vocab_size=32000,
        hidden=1024,
        intermediate=4096,
        layers=24,
        heads=16,
        kv_heads=16,
        seq_len=1024,
        batch_size=8,
        steps=20,
        warmup_steps=5,
        repeats=1,
    ),
    # ≈1.1B parameters (the Llama-3.2-1B body with a 32k vocabulary and an untied head).
    "1b": Preset(
        vocab_size=32000,
        hidden=2048,
        intermediate=8192,
        layers=16,
        heads=32,
        kv_heads=8,
        seq_len=1024,
        batch_size=8,
        steps=20,
        warmup_steps=5,
        repeats=1,
    ),
}


def model_config(preset: Preset, tokenizer_size: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=preset.vocab_size or tokenizer_size,
        hidden_size=preset.hidden,
        intermediate_size=preset.intermediate,
        num_hidden_layers=preset.layers,
        num_attention_heads=preset.heads,
        num_key_value_heads=preset.kv_heads,
        max_position_embeddings=max(2048, 2 * preset.seq_len),
        tie_word_embeddings=preset.tie_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": preset.rope_theta},
        attention_dropout=0.0,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )


# ---- data ------------------------------------------------------------------------------------------------


def _filler(costs: dict[str, int], budget: int, rng: random.Random) -> str:
    """Sentences like " I like the plum." adding up to at most `budget` tokens.

    The byte-level pre-tokenizer splits before every space and at the full stop, so no merge crosses
    two sentences and the token count of the text is the sum over its sentences (`costs`, by word).
    """
    words = list(costs)
    parts: list[str] = []
    used = 0
    while True:
        word = rng.choice(words)
        if used + costs[word] > budget:
            return "".join(parts)
        parts.append(f" I like the {word}.")
        used += costs[word]


PROMPT_SHARES: dict[str, tuple[float, float]] = {
    "long-prompt": (0.65, 0.75),
    "short-prompt": (0.15, 0.25),
    "mixed": (0.05, 0.95),
}
"""Range of the prompt's share of a sequence, drawn per row, for each `--data` kind but `balanced`."""
DATA_KINDS = ("balanced", *PROMPT_SHARES)


def _filler_words(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    words = [w for ws in CATEGORIES.values() for w in ws]
    return {w: len(tokenizer(f" I like the {w}.", add_special_tokens=False)["input_ids"]) for w in words}


def long_rows(tokenizer: PreTrainedTokenizerBase, n: int, seq_len: int) -> list[dict[str, str]]:
    """`balanced`: `preference_rows` stretched so that each prompt+completion is 70-100% of `seq_len`.

    The prompt gets 35-50% of `seq_len` in filler before the question; chosen and rejected each get
    35-50% after their answer, drawn separately, so a batch has some padding as real data does.
    """
    rng = random.Random(SEED)
    costs = _filler_words(tokenizer)

    def filler() -> str:
        budget = int(seq_len * rng.uniform(0.35, 0.5)) - 4  # room for BOS/EOS and the one-word answer
        return _filler(costs, budget, rng)

    return [
        {
            "prompt": filler().lstrip() + " " + row["prompt"],
            "chosen": row["chosen"] + filler(),
            "rejected": row["rejected"] + filler(),
        }
        for row in preference_rows(n, seed=SEED)
    ]


def shared_prompt_rows(
    tokenizer: PreTrainedTokenizerBase, n: int, seq_len: int, shares: tuple[float, float]
) -> list[dict[str, str]]:
    """Rows whose chosen and rejected sequences are each 70-100% of `seq_len` (drawn separately), the
    prompt taking a share of them drawn from `shares`: long prompts (RAG contexts, multi-turn chats)
    or short ones."""
    rng = random.Random(SEED)
    costs = _filler_words(tokenizer)
    rows = []
    for row in preference_rows(n, seed=SEED):
        chosen_len, rejected_len = (int(seq_len * rng.uniform(0.7, 1.0)) for _ in range(2))
        prompt_len = int(rng.uniform(*shares) * (chosen_len + rejected_len) / 2)
        rows.append(
            {
                # Room for BOS and the question in the prompt, the answer and EOS in each completion.
                "prompt": _filler(costs, prompt_len - 8, rng).lstrip() + " " + row["prompt"],
                "chosen": row["chosen"] + _filler(costs, chosen_len - prompt_len - 3, rng),
                "rejected": row["rejected"] + _filler(costs, rejected_len - prompt_len - 3, rng),
            }
        )
    return rows


def bench_rows(tokenizer: PreTrainedTokenizerBase, n: int, seq_len: int, kind: str) -> list[dict[str, str]]:
    if kind == "balanced":
        return long_rows(tokenizer, n, seq_len)
    return shared_prompt_rows(tokenizer, n, seq_len, PROMPT_SHARES[kind])


def prompt_share(tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, str]]) -> float:
    """Prompt tokens over all tokens of the chosen and rejected sequences (the prompt counted twice)."""
    prompt = sum(len(tokenizer(r["prompt"])["input_ids"]) for r in rows)
    return 2 * prompt / sum(sequence_lengths(tokenizer, rows))


def sequence_lengths(tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, str]]) -> list[int]:
    """Tokens per chosen and rejected sequence, BOS and EOS included (before max_length truncation)."""
    return [
        len(tokenizer(row["prompt"] + row[side] + tokenizer.eos_token)["input_ids"])
        for row in rows
        for side in ("chosen", "rejected")
    ]


# ---- one run, in a worker process ------------------------------------------------------------------------


@dataclass(frozen=True)
class RunConfig:
    impl: str
    mode: str
    model_dir: str
    data: str
    work_dir: str
    batch_size: int
    seq_len: int
    steps: int
    warmup_steps: int
    learning_rate: float
    precompute_ref: bool
    packing: bool = True


@dataclass(frozen=True)
class CpuTime:
    """CPU seconds this process spent in user code and in the kernel, and its minor page faults.

    Wall-clock tokens/s depends on the box; CPU per token says where the time went. A page fault costs
    kernel time (zeroing a fresh page): an implementation that allocates large short-lived tensors pays it
    on every step, more on some machines (VMs) than on others."""

    user_s: float
    sys_s: float
    minor_faults: int

    @staticmethod
    def now() -> "CpuTime":
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return CpuTime(usage.ru_utime, usage.ru_stime, usage.ru_minflt)

    def __sub__(self, other: "CpuTime") -> "CpuTime":
        return CpuTime(
            self.user_s - other.user_s, self.sys_s - other.sys_s, self.minor_faults - other.minor_faults
        )


@dataclass
class RunResult:
    impl: str
    mode: str
    trainable_params: int
    tokens: int
    """Non-pad tokens of the chosen and rejected sequences in the timed steps."""
    pairs: int
    seconds: float
    step_seconds: list[float]
    step_tokens: list[int]
    peak_memory_bytes: int
    memory_kind: str
    baseline_memory_bytes: int = 0
    """CPU: RSS after the imports, before the run (the same for both implementations); GPU: 0."""
    cpu: CpuTime | None = None
    """The process's CPU time and page faults over the timed steps (all threads)."""
    extra: dict[str, Any] = field(default_factory=dict)


def _proc_status_bytes(key: str) -> int | None:
    """A `kB` line of /proc/self/status (Linux) in bytes, or None where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _peak_memory(device: torch.device) -> tuple[int, str]:
    """GPU: the allocator's peak. CPU: this process's peak RSS.

    On Linux the peak RSS is VmHWM, not `getrusage(RUSAGE_SELF).ru_maxrss`: execve carries the
    parent's high-water mark into ru_maxrss, so a worker would report at least the parent's RSS.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "torch.cuda.max_memory_allocated"
    hwm = _proc_status_bytes("VmHWM")
    if hwm is not None:
        return hwm, "peak RSS (VmHWM)"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak RSS (ru_maxrss)"


class _CollectingReporter(Reporter):
    """Keeps the recipe's metric points in memory; events and checkpoints are dropped."""

    def __init__(self) -> None:
        self.points: list[MetricPoint] = []
        self.cpu: dict[int, CpuTime] = {}

    def emit(self, payload: Payload) -> None:
        if isinstance(payload, MetricPoint) and payload.split == "train":
            self.cpu[payload.step] = CpuTime.now()
            self.points.append(payload)

    def flush(self) -> None:
        pass


class _NoSaveRecipe(DPORecipe):
    """The recipe as shipped, minus the final checkpoint and weights, which are not what is timed."""

    def finish(self) -> Path:
        return self.output_dir


def run_alignd(cfg: RunConfig) -> RunResult:
    training_type = TrainingType(cfg.mode)
    spec = JobSpec(
        model=cfg.model_dir,
        training_file=cfg.data,
        output_dir=str(Path(cfg.work_dir) / "alignd-out"),
        seed=SEED,
        training_type=training_type,
        lora=LoraSpec(),
        precision=Precision.auto,
        hyperparameters=Hyperparameters(
            beta=BETA,
            batch_size=cfg.batch_size,
            learning_rate=cfg.learning_rate,
            warmup_ratio=0.0,
            lr_scheduler=LRScheduler.constant,
            max_length=cfg.seq_len,
            save_steps=10**9,
            precompute_ref_log_probs=cfg.precompute_ref,
            gradient_checkpointing=False,
            max_steps=cfg.warmup_steps + cfg.steps,
            packing=cfg.packing,
        ),
    )
    reporter = _CollectingReporter()
    recipe = _NoSaveRecipe(spec, reporter, DistInfo())
    recipe.setup()
    recipe.train()
    points = {p.step: p for p in reporter.points}
    timed = [points[s] for s in range(cfg.warmup_steps, cfg.warmup_steps + cfg.steps + 1)]
    first, last = timed[0], timed[-1]
    ends = [p.created_at for p in timed]
    counts = [p.values["num_tokens"] for p in timed]
    peak, kind = _peak_memory(recipe.device)
    return RunResult(
        impl="alignd",
        mode=cfg.mode,
        trainable_params=sum(p.numel() for p in recipe.params),
        tokens=int(last.values["num_tokens"] - first.values["num_tokens"]),
        pairs=cfg.batch_size * cfg.steps,
        seconds=last.created_at - first.created_at,
        step_seconds=[b - a for a, b in pairwise(ends)],
        step_tokens=[int(b - a) for a, b in pairwise(counts)],
        peak_memory_bytes=peak,
        memory_kind=kind,
        cpu=reporter.cpu[last.step] - reporter.cpu[first.step],
        extra={"final_loss": last.values.get("loss")},
    )


class _StepClock(TrainerCallback):
    """Wall-clock time at the end of every optimizer step and TRL's running non-pad token count."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.ends: dict[int, float] = {}
        self.cpu: dict[int, CpuTime] = {}
        self.tokens: dict[int, float] = {}
        self.losses: dict[int, float] = {}

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.ends[state.global_step] = time.time()
        self.cpu[state.global_step] = CpuTime.now()

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if logs and "num_tokens" in logs:
            self.tokens[state.global_step] = logs["num_tokens"]
        if logs and "loss" in logs:
            self.losses[state.global_step] = logs["loss"]


def run_trl(cfg: RunConfig) -> RunResult:
    device = resolve_device()
    cuda = device.type == "cuda"
    dtype = resolve_dtype(Precision.auto, device)  # what alignd picks: bf16 weights on GPU, fp32 on CPU
    tokenizer = AutoTokenizer.from_pretrained(cfg.model_dir)
    model = AutoModelForCausalLM.from_pretrained(cfg.model_dir, dtype=dtype)
    rows = [json.loads(line) for line in Path(cfg.data).read_text().splitlines() if line.strip()]
    args = DPOConfig(
        output_dir=str(Path(cfg.work_dir) / "trl-out"),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=1,
        max_steps=cfg.warmup_steps + cfg.steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        beta=BETA,
        max_length=cfg.seq_len,
        precompute_ref_log_probs=cfg.precompute_ref,
        gradient_checkpointing=False,
        disable_dropout=True,
        bf16=cuda,
        use_cpu=not cuda,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=SEED,
    )
    clock = _StepClock(cuda)
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config(LoraSpec()) if cfg.mode == "lora" else None,
        callbacks=[clock],
    )
    trainer.train()
    first, last = cfg.warmup_steps, cfg.warmup_steps + cfg.steps
    ends = [clock.ends[s] for s in range(first, last + 1)]
    counts = [clock.tokens[s] for s in range(first, last + 1)]
    peak, kind = _peak_memory(device)
    policy = trainer.model
    assert policy is not None
    return RunResult(
        impl="trl",
        mode=cfg.mode,
        trainable_params=sum(p.numel() for p in policy.parameters() if p.requires_grad),
        tokens=int(clock.tokens[last] - clock.tokens[first]),
        pairs=cfg.batch_size * cfg.steps,
        seconds=clock.ends[last] - clock.ends[first],
        step_seconds=[b - a for a, b in pairwise(ends)],
        step_tokens=[int(b - a) for a, b in pairwise(counts)],
        peak_memory_bytes=peak,
        memory_kind=kind,
        cpu=clock.cpu[last] - clock.cpu[first],
        extra={"final_loss": clock.losses.get(last)},
    )


def worker(config_path: str, result_path: str) -> None:
    cfg = RunConfig(**json.loads(Path(config_path).read_text()))
    torch.manual_seed(SEED)
    baseline = 0 if torch.cuda.is_available() else _proc_status_bytes("VmRSS") or 0
    result = run_alignd(cfg) if cfg.impl == "alignd" else run_trl(cfg)
    result.baseline_memory_bytes = baseline
    Path(result_path).write_text(json.dumps(asdict(result)))


# ---- the parent: build the model and data, run the workers, print the table -----------------------------


def build_model_dir(preset: Preset, out: Path, dtype: torch.dtype) -> dict[str, int]:
    """Save the tokenizer and a random-init model; return its parameter counts."""
    tokenizer = train_tokenizer(corpus())
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(model_config(preset, len(tokenizer)), dtype=dtype)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    total = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    return {"total": total, "embedding": embedding, "matmul": total - embedding}


def flops_per_token(matmul_params: int, mode: str, precompute_ref: bool) -> int:
    """Model FLOPs per non-pad token: 2P forward, 4P (full) or 2P (LoRA) backward, 2P reference forward."""
    policy = 6 if mode == "full" else 4
    reference = 0 if precompute_ref else 2
    return (policy + reference) * matmul_params


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "peft": peft.__version__,
        "cpu": _cpu_model(),
        "cpu_cores": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "load_average_1m": os.getloadavg()[0],
        "timeit_sum_range_1000_us": python_speed_us(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def python_speed_us() -> float:
    """`python -m timeit "sum(range(1000))"`'s figure (best of 5, µs per loop): how fast this box runs
    plain Python right now, to set figures from different machines or moments side by side."""
    timer = timeit.Timer("sum(range(1000))")
    loops, _ = timer.autorange()
    return min(timer.repeat(repeat=5, number=loops)) / loops * 1e6


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def peak_flops(args_tflops: float | None) -> float | None:
    if args_tflops is not None:
        return args_tflops * 1e12
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in name:
            return tflops * 1e12
    return None


def run_worker(cfg: RunConfig, index: int) -> RunResult:
    work = Path(cfg.work_dir)
    config_path, result_path, log_path = (work / f"run{index}.{ext}" for ext in ("json", "result", "log"))
    config_path.write_text(json.dumps(asdict(cfg)))
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(config_path), str(result_path)]
    with open(log_path, "w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = log_path.read_text()[-4000:]
        raise SystemExit(f"{cfg.impl}/{cfg.mode} failed (exit {done.returncode}):\n{tail}")
    fields = json.loads(result_path.read_text())
    cpu = fields.pop("cpu")
    return RunResult(**fields, cpu=None if cpu is None else CpuTime(**cpu))


def summarise(
    runs: list[RunResult], params: dict[str, int], precompute_ref: bool, peak: float | None
) -> list[dict[str, Any]]:
    """One row per (impl, mode) from its fastest repeat, and the largest peak memory of any repeat.

    Best-of-N, not the median: on a shared machine other processes only ever slow a run down, so
    the fastest repeat is the closest to what the implementation does alone. All repeats stay in
    the JSON output (`tokens_per_s_all`).
    """
    rows: list[dict[str, Any]] = []
    for mode in MODES:
        for impl in IMPLS:
            mine = [r for r in runs if r.impl == impl and r.mode == mode]
            if not mine:
                continue
            best = max(mine, key=lambda r: r.tokens / r.seconds)
            heaviest = max(mine, key=lambda r: r.peak_memory_bytes)
            tokens_per_s = best.tokens / best.seconds
            flops = flops_per_token(params["matmul"], mode, precompute_ref) * tokens_per_s
            step_rates = [t / s for t, s in zip(best.step_tokens, best.step_seconds, strict=True)]
            rows.append(
                {
                    "impl": impl,
                    "mode": mode,
                    "trainable_params": best.trainable_params,
                    "tokens_per_s": tokens_per_s,
                    "samples_per_s": best.pairs / best.seconds,
                    "peak_memory_bytes": heaviest.peak_memory_bytes,
                    "baseline_memory_bytes": heaviest.baseline_memory_bytes,
                    "memory_kind": heaviest.memory_kind,
                    "model_tflops_per_s": flops / 1e12,
                    "mfu": flops / peak if peak else None,
                    "median_step_s": statistics.median(best.step_seconds),
                    "median_step_tokens_per_s": statistics.median(step_rates),
                    "tokens_per_step": best.tokens / len(best.step_seconds),
                    **_cpu_per_token(best),
                    "repeats": len(mine),
                    "tokens_per_s_all": [r.tokens / r.seconds for r in mine],
                }
            )
    return rows


def _cpu_per_token(run: RunResult) -> dict[str, float]:
    if run.cpu is None or not run.tokens:
        return {}
    return {
        "cpu_user_ms_per_token": 1000 * run.cpu.user_s / run.tokens,
        "cpu_sys_ms_per_token": 1000 * run.cpu.sys_s / run.tokens,
        "minor_faults_per_token": run.cpu.minor_faults / run.tokens,
    }


def _cpu(row: dict[str, Any]) -> str:
    if "cpu_user_ms_per_token" not in row:
        return "n/a"
    return f"{row['cpu_user_ms_per_token']:.1f}+{row['cpu_sys_ms_per_token']:.1f}"


def _count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def _memory(peak: int, baseline: int) -> str:
    text = f"{peak / 2**30:.2f} GiB"
    return text + f" (+{(peak - baseline) / 2**20:,.0f} MiB)" if baseline else text


def _cpu_ms(row: dict[str, Any]) -> float:
    return float(row["cpu_user_ms_per_token"] + row["cpu_sys_ms_per_token"])


def _growth(row: dict[str, Any]) -> int:
    return max(1, int(row["peak_memory_bytes"]) - int(row["baseline_memory_bytes"]))


def _table(headers: list[str], body: list[list[str]]) -> str:
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(
            c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in body
    ]
    return "\n".join(lines)


def report(summary: list[dict[str, Any]], params: dict[str, int]) -> str:
    headers = [
        "impl",
        "mode",
        "params (trainable)",
        "tokens/s",
        "samples/s",
        "peak mem",
        "model TFLOP/s",
        "MFU",
        "step s (median)",
        "tokens/s (median step)",
        "CPU ms/token (user+sys)",
        "page faults/token",
    ]
    body = [
        [
            s["impl"],
            s["mode"],
            f"{_count(params['total'])} ({_count(s['trainable_params'])})",
            f"{s['tokens_per_s']:,.0f}",
            f"{s['samples_per_s']:.2f}",
            _memory(s["peak_memory_bytes"], s["baseline_memory_bytes"]),
            f"{s['model_tflops_per_s']:.3g}",
            "n/a" if s["mfu"] is None else f"{100 * s['mfu']:.1f}%",
            f"{s['median_step_s']:.3f}",
            f"{s['median_step_tokens_per_s']:,.0f}",
            _cpu(s),
            f"{s['minor_faults_per_token']:,.0f}" if "minor_faults_per_token" in s else "n/a",
        ]
        for s in summary
    ]
    lines = [_table(headers, body), ""]
    by_key = {(s["impl"], s["mode"]): s for s in summary}
    for mode in MODES:
        ours, theirs = by_key.get(("alignd", mode)), by_key.get(("trl", mode))
        if ours and theirs:
            speed = ours["tokens_per_s"] / theirs["tokens_per_s"]
            step_speed = ours["median_step_tokens_per_s"] / theirs["median_step_tokens_per_s"]
            if ours["baseline_memory_bytes"] and theirs["baseline_memory_bytes"]:
                growth = _growth(ours) / _growth(theirs)
                memory = f"peak RSS above the post-import baseline = {growth:.2f}x"
            else:
                memory = f"peak memory = {ours['peak_memory_bytes'] / theirs['peak_memory_bytes']:.2f}x"
            cpu = ""
            if "cpu_user_ms_per_token" in ours and "cpu_user_ms_per_token" in theirs:
                user = theirs["cpu_user_ms_per_token"] / ours["cpu_user_ms_per_token"]
                total = _cpu_ms(theirs) / _cpu_ms(ours)
                cpu = f", TRL/alignd CPU per token = {total:.2f}x (user only {user:.2f}x)"
            lines.append(
                f"{mode}: alignd/TRL tokens/s = {speed:.2f}x (median step {step_speed:.2f}x), {memory}{cpu}"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu-small")
    parser.add_argument("--mode", choices=[*MODES, "both"], default="both")
    parser.add_argument("--impl", choices=[*IMPLS, "both"], default="both")
    parser.add_argument("--steps", type=int, help="timed optimizer steps (default: the preset's)")
    parser.add_argument("--warmup-steps", type=int, help="untimed steps first (default: the preset's)")
    parser.add_argument(
        "--batch-size", type=int, help="preference pairs per optimizer step (default: the preset's)"
    )
    parser.add_argument(
        "--seq-len", type=int, help="max_length; sequences are 70-100%% of it (default: the preset's)"
    )
    parser.add_argument("--lr", type=float, help="default: alignd's default for the mode")
    parser.add_argument("--precompute-ref", action="store_true", help="precompute reference log-probs")
    parser.add_argument(
        "--data",
        choices=DATA_KINDS,
        default="balanced",
        help="prompt share of each sequence: balanced 35-50%%, long-prompt ~70%%, short-prompt ~20%%, "
        "mixed 5-95%% (default: balanced)",
    )
    parser.add_argument(
        "--no-packing", action="store_true", help="alignd with padded batches (packing: false)"
    )
    parser.add_argument("--repeats", type=int, help="runs per (impl, mode), interleaved (default: preset's)")
    parser.add_argument("--peak-tflops", type=float, help="device peak for MFU (default: known GPUs)")
    parser.add_argument("--out-json", type=Path, help="write the machine, config, runs and table here")
    parser.add_argument("--worker", nargs=2, metavar=("CONFIG", "RESULT"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return
    preset = PRESETS[args.preset]
    steps = args.steps or preset.steps
    warmup = args.warmup_steps if args.warmup_steps is not None else preset.warmup_steps
    batch_size = args.batch_size or preset.batch_size
    repeats = args.repeats or preset.repeats
    if steps < 1 or warmup < 1 or batch_size < 1 or repeats < 1:
        raise SystemExit("--steps, --warmup-steps, --batch-size and --repeats must be at least 1")
    seq_len = args.seq_len or preset.seq_len
    modes = MODES if args.mode == "both" else (args.mode,)
    impls = IMPLS if args.impl == "both" else (args.impl,)
    dtype = resolve_dtype(Precision.auto, resolve_device())
    info = machine()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)

    with tempfile.TemporaryDirectory(prefix="alignd-bench-") as tmp:
        work = Path(tmp)
        model_dir = work / "model"
        params = build_model_dir(preset, model_dir, dtype)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        rows = bench_rows(tokenizer, batch_size * (warmup + steps), seq_len, args.data)
        data = write_jsonl(work / "train.jsonl", rows)
        lengths = sequence_lengths(tokenizer, rows)
        print(
            f"model: {args.preset} {_count(params['total'])} params ({_count(params['matmul'])} without the "
            f"input embedding), {dtype}; data: {len(rows)} pairs, tokens/sequence mean "
            f"{statistics.mean(lengths):.0f} min {min(lengths)} max {max(lengths)} (max_length {seq_len}), "
            f"{args.data}: prompt {100 * prompt_share(tokenizer, rows):.0f}% of tokens; "
            f"alignd packing {'off' if args.no_packing else 'on'}",
            flush=True,
        )
        runs: list[RunResult] = []
        for repeat in range(repeats):
            for mode in modes:
                for impl in impls:
                    cfg = RunConfig(
                        impl=impl,
                        mode=mode,
                        model_dir=str(model_dir),
                        data=str(data),
                        work_dir=tmp,
                        batch_size=batch_size,
                        seq_len=seq_len,
                        steps=steps,
                        warmup_steps=warmup,
                        learning_rate=args.lr or DEFAULT_LEARNING_RATE[TrainingType(mode)],
                        precompute_ref=args.precompute_ref,
                        packing=not args.no_packing,
                    )
                    started = time.monotonic()
                    result = run_worker(cfg, len(runs))
                    runs.append(result)
                    print(
                        f"  [{repeat + 1}/{repeats}] {impl:6} {mode:4}: "
                        f"{result.tokens / result.seconds:,.0f} tokens/s over {steps} steps "
                        f"({time.monotonic() - started:.0f}s with start-up), "
                        f"final loss {result.extra['final_loss']:.6f}",
                        flush=True,
                    )

    summary = summarise(runs, params, args.precompute_ref, peak_flops(args.peak_tflops))
    info["load_average_1m_end"] = os.getloadavg()[0]  # other processes on the box skew CPU numbers
    info["timeit_sum_range_1000_us_end"] = python_speed_us()
    start, end = info["load_average_1m"], info["load_average_1m_end"]
    speed = f"{info['timeit_sum_range_1000_us']:.1f} / {info['timeit_sum_range_1000_us_end']:.1f} µs"
    print(f"\nload average (1 min): {start:.2f} at start, {end:.2f} at end; timeit sum(range(1000)): {speed}")
    print(report(summary, params))
    if args.out_json:
        config = {
            "preset": args.preset,
            "model": asdict(preset),
            "params": params,
            "dtype": str(dtype),
            "batch_size": batch_size,
            "seq_len": seq_len,
            "steps": steps,
            "warmup_steps": warmup,
            "precompute_ref": args.precompute_ref,
            "data": args.data,
            "packing": not args.no_packing,
            "beta": BETA,
            "sequence_tokens_mean": statistics.mean(lengths),
        }
        payload = {"machine": info, "config": config, "summary": summary, "runs": [asdict(r) for r in runs]}
        args.out_json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
