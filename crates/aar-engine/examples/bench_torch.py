"""PyTorch side of aar-engine's benchmark (run by examples/bench.rs; see there).

  bench_torch.py prepare DIR            writes random-weight minilm/ and qwen05b/ model dirs
  bench_torch.py WORKLOAD DIR THREADS REPS BATCH SEQ
                                        runs one workload, prints one JSON line
Workloads: minilm-train (full fine-tuning AdamW step), minilm-infer, qwen-forward.
On a CUDA machine the weights are bf16; "peak_rss_mb" is always the host's peak RSS.
"""

import json
import os
import resource
import statistics
import sys
import time

import torch


def minilm_config():
    from transformers import BertConfig

    return BertConfig(
        vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
        intermediate_size=1536, max_position_embeddings=512, attn_implementation="sdpa",
    )


def qwen_config():
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=1000000.0,
        tie_word_embeddings=True, max_position_embeddings=32768, attn_implementation="sdpa",
    )


def prepare(out):
    from transformers import BertModel, Qwen2ForCausalLM

    torch.manual_seed(0)
    minilm = os.path.join(out, "minilm")
    if not os.path.exists(os.path.join(minilm, "model.safetensors")):
        BertModel(minilm_config(), add_pooling_layer=False).save_pretrained(minilm)
    qwen = os.path.join(out, "qwen05b")
    if not os.path.exists(os.path.join(qwen, "model.safetensors")):
        Qwen2ForCausalLM(qwen_config()).save_pretrained(qwen, max_shard_size="10GB")


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# As aar's engine: fp32 on CPU, bf16 weights on CUDA.
DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float32


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timed(fn, reps):
    fn()  # warm-up
    sync()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_mb():
    """Peak host RSS (also on CUDA, to compare with the Rust side's VmHWM)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    workload, out, threads, reps, batch, seq = sys.argv[1:7]
    threads, reps, batch, seq = int(threads), int(reps), int(batch), int(seq)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    from transformers import BertModel, Qwen2ForCausalLM

    gen = torch.Generator().manual_seed(1)
    if workload.startswith("minilm"):
        model = BertModel.from_pretrained(os.path.join(out, "minilm"), attn_implementation="sdpa").to(DEVICE, DTYPE)
        head = torch.nn.Linear(384, 2).to(DEVICE)
        ids = torch.randint(0, 30522, (batch, seq), generator=gen).to(DEVICE)
        mask = torch.ones_like(ids)
        labels = torch.randint(0, 2, (batch,), generator=gen).to(DEVICE)

        def logits():
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            return head(pooled.float())

        if workload == "minilm-train":
            model.train()
            params = list(model.parameters()) + list(head.parameters())
            opt = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.95), weight_decay=0.01)

            def step():
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(logits(), labels)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()

            seconds = timed(step, reps)
        else:
            model.eval()

            def infer():
                with torch.no_grad():
                    logits().softmax(-1)

            seconds = timed(infer, reps)
    elif workload == "qwen-forward":
        model = Qwen2ForCausalLM.from_pretrained(os.path.join(out, "qwen05b"), attn_implementation="sdpa")
        model = model.to(DEVICE, DTYPE).eval()
        ids = torch.randint(0, 151936, (batch, seq), generator=gen).to(DEVICE)
        mask = torch.ones_like(ids)

        def forward():
            with torch.no_grad():
                model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits.float().softmax(-1)

        seconds = timed(forward, reps)
    else:
        raise SystemExit(f"unknown workload {workload}")
    print(json.dumps({"stack": "pytorch", "workload": workload, "examples_per_s": batch / seconds,
                      "median_s": seconds, "peak_rss_mb": peak_mb(), "threads": threads, "device": DEVICE}))


if __name__ == "__main__":
    if sys.argv[1] == "prepare":
        prepare(sys.argv[2])
    else:
        main()
