"""The throughput table behind estimated durations: tokens per second per GPU profile and training type.

An admin sets it with ALIGND_ESTIMATE_THROUGHPUT (JSON, the Helm value `estimate.throughput`). Each entry
is measured (or assumed) for a model of `params` parameters without the input embedding (bench/README.md's
P); an estimate scales it by `params / P` of the job's model, since a step's FLOPs grow linearly with P
(bench/README.md, "FLOPs and MFU"). Tokens are what the trainer's `tokens_per_second` counts: the
non-pad tokens of the chosen and the rejected sequence, prompt counted in both.
"""

from pydantic import BaseModel, ConfigDict, Field

from alignd.contract import TrainingType


class Throughput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lora: float = Field(..., gt=0, description="Tokens/s of one device training LoRA on a model of `params`.")
    full: float = Field(..., gt=0, description="Tokens/s of one device in full fine-tuning.")
    params: int = Field(..., gt=0, description="P of the model the figures hold for (no input embedding).")
    source: str = Field("", description="Where the figures come from; shown with every estimate.")

    def tokens_per_second(self, training_type: TrainingType) -> float:
        return self.lora if training_type is TrainingType.lora else self.full


CPU_PROFILE = "cpu"
"""The profile of jobs with `resources.gpus: 0`."""

BENCH_1B_PARAMS = 1_038_682_112
"""P of bench/README.md's `1b` preset (the Llama-3.2-1B body): the model the GPU defaults are sized for."""
BENCH_SMOLLM2_PARAMS = 106_203_456
"""P of bench/README.md's `smollm2-135m` preset."""
ASSUMED_MFU = 0.3
"""Not measured: bench/README.md has no GPU figures yet. A third of peak is a common DPO training MFU."""
FLOPS_PER_TOKEN = {TrainingType.lora: 6, TrainingType.full: 8}
"""Multiples of P per token with a per-step reference forward (bench/README.md, "FLOPs and MFU")."""
PEAK_TFLOPS = {"a100": 312, "h100": 989, "h100-pcie": 756, "h200": 989}
"""Peak dense bf16 TFLOP/s, as bench/README.md lists them for MFU."""


def _from_peak(name: str, peak_tflops: float) -> Throughput:
    lora, full = (
        ASSUMED_MFU * peak_tflops * 1e12 / (FLOPS_PER_TOKEN[kind] * BENCH_1B_PARAMS)
        for kind in (TrainingType.lora, TrainingType.full)
    )
    return Throughput(
        lora=round(lora),
        full=round(full),
        params=BENCH_1B_PARAMS,
        source=f"derived, not measured: {ASSUMED_MFU:.0%} of {name}'s {peak_tflops} TFLOP/s peak "
        "(bench/README.md, 'FLOPs and MFU') at 6·P (LoRA) or 8·P (full) FLOPs per token, for the "
        "bench's 1b preset (P = 1,038,682,112)",
    )


def default_throughput() -> dict[str, Throughput]:
    """The table when the admin sets none: CPU measured, GPUs derived from their peak FLOP/s."""
    table = {
        CPU_PROFILE: Throughput(
            lora=175,
            full=175,
            params=BENCH_SMOLLM2_PARAMS,
            source="measured: bench/README.md, 'Prompt-shared, padding-free batches on a quiet box (CPU, "
            "smollm2-135m)', the median of alignd's tokens/s over its five runs (LoRA 229/196/175/146/"
            "138, full 179/175/175/125/112) on 2 vCPUs",
        )
    }
    return table | {name: _from_peak(name, peak) for name, peak in PEAK_TFLOPS.items()}
