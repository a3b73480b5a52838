"""Packed rows on CUDA through FlexAttention and the varlen (flash) kernel, against padded SDPA in bf16.

On CPU the same routes are checked in fp32 (test_packing: FlexAttention forward, varlen with its reference
kernel); only here do the CUDA kernels themselves run, backward included. Skipped cleanly where no CUDA
device exists (CI).
"""

import copy
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignd.contract import TruncationMode
from alignd_trainer.attention import FLEX, SDPA, flex_available
from alignd_trainer.data import collate, read_examples, tokenize_examples
from alignd_trainer.logps import packed_logps, sequence_logps
from alignd_trainer.model import set_attention
from alignd_trainer.packing import pack
from alignd_trainer.synthetic import write_jsonl
from alignd_trainer.varlen import VARLEN, cuda_varlen_available
from tests.trainer.parity_rows import MAX_LENGTH, rows_for

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

AVAILABLE = {FLEX: flex_available, VARLEN: cuda_varlen_available}


@pytest.mark.parametrize("mode", [TruncationMode.keep_start, TruncationMode.keep_end], ids=str)
@pytest.mark.parametrize("kernel", [FLEX, VARLEN])
def test_cuda_kernels_give_packed_rows_the_padded_logps_and_gradients(
    kernel: str, mode: TruncationMode, tiny_model_dir: Path, tmp_path: Path
) -> None:
    assert AVAILABLE[kernel](), f"this PyTorch ({torch.__version__}) lacks {kernel} on CUDA"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = read_examples(write_jsonl(tmp_path / "rows.jsonl", rows_for("conversational")[0]))
    pairs = tokenize_examples(tokenizer, examples, max_length=MAX_LENGTH, truncation_mode=mode).pairs
    padded = collate(pairs, pad_token_id=tokenizer.pad_token_id, max_length=MAX_LENGTH, truncation_mode=mode)
    rows = pack(pairs, max_length=MAX_LENGTH, truncation_mode=mode, token_budget=2048)
    padded_model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).cuda()
    set_attention(padded_model, SDPA)
    packed_model = copy.deepcopy(padded_model)
    set_attention(packed_model, kernel)

    want = sequence_logps(
        padded_model, *(t.cuda() for t in (padded.input_ids, padded.attention_mask, padded.completion_mask))
    )
    want.logps.sum().backward()
    outputs = [packed_logps(packed_model, row.to(torch.device("cuda"))) for row in rows]
    torch.stack([o.logps.sum() for o in outputs]).sum().backward()

    chosen: dict[int, torch.Tensor] = {}
    rejected: dict[int, torch.Tensor] = {}
    for row, out in zip(rows, outputs, strict=True):
        for k, (c, r) in enumerate(zip(*out.logps.chunk(2), strict=True)):
            chosen[row.indices[k]], rejected[row.indices[k]] = c, r
    got = torch.stack([chosen[i] for i in padded.indices] + [rejected[i] for i in padded.indices])
    torch.testing.assert_close(got, want.logps, atol=0.25, rtol=0.02)
    for (name, p), q in zip(padded_model.named_parameters(), packed_model.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None, name
        cosine = torch.nn.functional.cosine_similarity(
            p.grad.float().flatten(), q.grad.float().flatten(), dim=0
        )
        assert cosine > 0.99, f"{name}: gradient direction differs (cosine {cosine.item():.4f})"
