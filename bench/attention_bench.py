"""Packed-row attention: SDPA with a dense (L × L) mask against FlexAttention with a BlockMask and varlen
(flash) attention over the row's branches.

One packed row of `--data` pairs (trainer_bench's rows and model preset) runs forward without gradients
(FlexAttention has no backward on CPU, so this is the reference/eval forward; on CUDA add --train to time
forward and backward) through each kernel, interleaved, after a warm-up that includes FlexAttention's
compile. On CPU `varlen` is the reference loop (SDPA sequence by sequence), not a flash kernel. Prints ms
per row for each and its ratio to SDPA, with the machine line and load. See bench/README.md.

    .venv/bin/python bench/attention_bench.py --preset smollm2-135m --data long-prompt --seq-len 512
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from transformers import AutoModelForCausalLM

from alignd.contract import TruncationMode
from alignd_trainer.attention import FLEX, SDPA
from alignd_trainer.data import read_examples, tokenize_examples
from alignd_trainer.logps import packed_logps
from alignd_trainer.model import set_attention
from alignd_trainer.packing import PackedBatch, pack, token_budget
from alignd_trainer.synthetic import corpus, write_jsonl
from alignd_trainer.tiny_model import train_tokenizer
from alignd_trainer.varlen import VARLEN

sys.path.insert(0, str(Path(__file__).parent))
from trainer_bench import DATA_KINDS, PRESETS, SEED, bench_rows, machine, model_config


def packed_row(seq_len: int, kind: str, tokenizer: object, tmp: Path) -> PackedBatch:
    rows = bench_rows(tokenizer, 32, seq_len, kind)  # type: ignore[arg-type]
    examples = read_examples(write_jsonl(tmp / "rows.jsonl", rows))
    pairs = tokenize_examples(
        tokenizer, examples, max_length=seq_len, truncation_mode=TruncationMode.keep_start
    ).pairs
    batches = pack(
        pairs,
        max_length=seq_len,
        truncation_mode=TruncationMode.keep_start,
        token_budget=token_budget(seq_len),
    )
    return max(batches, key=lambda b: b.input_ids.shape[1])


def timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="smollm2-135m")
    parser.add_argument("--data", choices=DATA_KINDS, default="long-prompt")
    parser.add_argument("--seq-len", type=int, default=512, help="max_length; rows hold up to 2× this")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train", action="store_true", help="forward and backward (CUDA only)")
    parser.add_argument(
        "--kernels",
        type=lambda text: text.split(","),
        default=[SDPA, FLEX, VARLEN],
        help=f"comma-separated, of {SDPA},{FLEX},{VARLEN}",
    )
    args = parser.parse_args()

    import torch._dynamo.config

    torch._dynamo.config.automatic_dynamic_shapes = False  # one row length; CPU's dynamic flex kernel fails
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = train_tokenizer(corpus())
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(model_config(PRESETS[args.preset], len(tokenizer))).to(device)
    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        row = packed_row(args.seq_len, args.data, tokenizer, Path(tmp)).to(device)

    def run(implementation: str) -> float:
        set_attention(model, implementation)
        if args.train:
            return timed(lambda: packed_logps(model, row).logps.sum().backward())
        with torch.no_grad():
            return timed(lambda: packed_logps(model, row))

    kernels = [name for name in (SDPA, FLEX, VARLEN) if name in args.kernels]
    warm = {name: run(name) for name in kernels}
    times: dict[str, list[float]] = {name: [] for name in kernels}
    for _ in range(args.repeats):
        for name in kernels:
            times[name].append(run(name))
    median = {name: statistics.median(times[name]) for name in kernels}
    info = machine()
    print(
        f"{info['cpu']} ({info['cpu_cores']} cores), torch {info['torch']}, load {os.getloadavg()}\n"
        f"{args.preset} {args.data}: one row of {row.input_ids.shape[1]} tokens ({row.pairs} pairs), "
        f"{'forward+backward' if args.train else 'forward, no grad'}, median of {args.repeats}"
    )
    for name in kernels:
        ratio = f"  sdpa / {name} time {median[SDPA] / median[name]:.2f}x" if SDPA in median else ""
        print(
            f"  {name:16} {median[name]:8.1f} ms  {[round(t) for t in times[name]]}  "
            f"(first call {warm[name] / 1000:.1f} s){ratio}"
        )


if __name__ == "__main__":
    main()
