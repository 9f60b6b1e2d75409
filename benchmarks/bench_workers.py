"""One benchmark run per process: scorealign, TRL or the bare-HF floor, on one model and one spec.

``python benchmarks/bench_workers.py SPEC.json OUT.json`` runs ``WORKERS[spec["worker"]](spec)`` and
writes its result (per-step seconds, completion tokens, rewards, peak RSS) as JSON. The driver,
``bench_vs_trl.py``, starts each run in a fresh interpreter so peak RSS is per library.

Per-step timings cover rollout + reference log-probs + reward + loss + optimizer step and exclude
logging/saving in every worker; the driver drops the first (warm-up) step.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def count_yes(prompts, completions, **_) -> list[float]:
    """The shared reward, identical for every library: the words 'yes' in the completion (case and
    punctuation ignored; a chat completion's messages' text)."""
    texts = [c if isinstance(c, str) else " ".join(m["content"] for m in c) for c in completions]
    return [float([w.strip(".,!?;:\"'").lower() for w in t.split()].count("yes")) for t in texts]


def peak_rss_mb() -> float:
    """This process's peak resident set size: VmHWM of /proc/self/status (this program's own
    memory: ru_maxrss also counts the parent's at fork, and the driver holds torch and the
    bandwidth probe's buffers); ru_maxrss (KiB) where /proc is absent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_now_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def time_calls(owner, name: str, sink: list) -> None:
    """Wrap ``owner.name`` so that each call's wall-clock seconds are appended to ``sink`` (the
    sampling share of a step, ``step_split.py``)."""
    fn = getattr(owner, name)

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            sink.append(time.perf_counter() - t0)

    setattr(owner, name, timed)


# Real-model prompts (chat messages, rendered by each library's chat template): questions a
# chat model answers in a sentence, so the shared reward ("yes" count) has room to move.
QUESTIONS = ["Is the sky blue?", "Can cats swim?", "Is water wet?", "Do fish sleep?",
             "Is Paris in France?", "Can birds fly?", "Is ice cold?", "Do plants need light?",
             "Is the sun a star?", "Can dogs smell fear?", "Is coffee a drink?", "Is snow white?",
             "Do bees make honey?", "Is the moon round?", "Can robots think?", "Is math useful?"]


def prompts(spec: dict) -> list:
    """The toy prompts, or (``spec["chat"]``) user messages for a chat model."""
    import random

    from scorealign.core.tiny import toy_prompts

    if not spec.get("chat"):
        return toy_prompts(256, spec["seed"])
    rng = random.Random(spec["seed"])
    out = [f"{q} Answer in one short sentence." for q in QUESTIONS for _ in range(16)]
    rng.shuffle(out)
    return [[{"role": "user", "content": text}] for text in out]


ARITH = Path(__file__).resolve().parents[1] / "examples" / "verifiable" / "arith_train.jsonl"


def task_rows(spec: dict) -> list[dict]:
    """Dataset rows: ``{"prompt": ...}`` of :func:`prompts`, or (``spec["task"] == "arith"``)
    the embedded one-step arithmetic task's chat prompts with their ``answer``, shuffled."""
    import random

    if spec.get("task") != "arith":
        return [{"prompt": p} for p in prompts(spec)]
    rows = [json.loads(x) for x in ARITH.read_text().splitlines() if x.strip()]
    random.Random(spec["seed"]).shuffle(rows)
    return [{"prompt": r["prompt"], "answer": r["answer"]} for r in rows]


def math_answer(prompts, completions, answer, **_) -> list[float]:
    """The arith task's reward for both libraries: scorealign's ``builtin:math`` (math-verify)."""
    from scorealign.rewards.verifiers import MathReward

    texts = [c if isinstance(c, str) else " ".join(m["content"] for m in c) for c in completions]
    return MathReward()(prompts, texts, answer=answer)


def reward_of(spec: dict):
    return math_answer if spec.get("task") == "arith" else count_yes


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def instrument_stages(k: int, stages: dict) -> None:
    """Time the sampler, its decode steps and the reference forward of each step (``stages``
    lists), and record the token counts the FLOP model needs (``roofline.stage_flops``)."""
    import scorealign.engine.generate as generate
    import scorealign.engine.rollout as rollout
    from scorealign.engine.decoder import LeanDecoder

    time_calls(generate, "sample", stages.setdefault("sample_s", []))
    time_calls(LeanDecoder, "step", stages.setdefault("decode_step_s", []))
    reference = rollout.completion_logprobs

    def timed_reference(model, p_ids, p_mask, c_ids, c_mask, *args, **kwargs):
        t0 = time.perf_counter()
        out = reference(model, p_ids, p_mask, c_ids, c_mask, *args, **kwargs)
        stages.setdefault("reference_s", []).append(time.perf_counter() - t0)
        B, C = c_ids.shape
        prompt, completion = p_mask.sum().item() / k, c_mask.sum().item()
        stages.setdefault("tokens", []).append(
            {"prefill": prompt, "prefill_rows": B / k, "decode": B * (C - 1),
             "forward": prompt + completion - B, "head": completion})
        return out

    rollout.completion_logprobs = timed_reference


# ------------------------------------------------------------------------------------------------ RLOO


def run_ours(spec: dict) -> dict:
    """scorealign RLOO through the public entry point, ``train(TrainConfig(...))``."""
    from scorealign.rewards.sources import CallableReward
    from scorealign.train import TrainConfig, train

    base_rss, sampling, stages = rss_now_mb(), [], {}
    if spec.get("split"):
        import scorealign.engine.generate

        time_calls(scorealign.engine.generate, "sample", sampling)
    if spec.get("stages"):
        instrument_stages(spec["k"], stages)
    with tempfile.TemporaryDirectory() as out:
        data = (str(write_jsonl(Path(out) / "prompts.jsonl", task_rows(spec)))
                if spec.get("chat") else "toy")
        cfg = TrainConfig(model=spec["model"], dataset=data, algo="rloo", k=spec["k"],
                          beta=spec["beta"], max_new_tokens=spec["max_new"], steps=spec["steps"],
                          prompts_per_step=spec["prompts_per_step"], lr=spec["lr"],
                          micro_batch_size=spec["micro_batch"], seed=spec["seed"],
                          output_dir=str(Path(out) / "run"), precision=spec.get("precision", "fp32"),
                          max_grad_norm=1.0, **spec.get("ours_extra", {}))
        run = train(cfg, reward=CallableReward(reward_of(spec), name=reward_of(spec).__name__))
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {"step_s": [r["time/step_s"] for r in rows],
            "tokens": [r["completion_len"] * spec["prompts_per_step"] * spec["k"] for r in rows],
            "reward": [r["reward/mean"] for r in rows], "base_rss_mb": base_rss,
            "sample_s": sampling, "stages": stages}


def run_trl(spec: dict) -> dict:
    """TRL's RLOOTrainer configured to do what ``run_ours`` does (see benchmarks/README.md)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import RLOOConfig, RLOOTrainer

    base_rss = rss_now_mb()
    batch = spec["prompts_per_step"] * spec["k"]
    times, logs, sampling = [], [], []
    if spec.get("split"):
        from transformers.generation.utils import GenerationMixin

        time_calls(GenerationMixin, "generate", sampling)

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t0)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "reward" in logs:
                logs_list.append(dict(logs))

    logs_list = logs
    with tempfile.TemporaryDirectory() as out:
        args = RLOOConfig(
            output_dir=out, per_device_train_batch_size=spec["micro_batch"],
            gradient_accumulation_steps=batch // spec["micro_batch"], num_generations=spec["k"],
            max_completion_length=spec["max_new"], beta=spec["beta"], learning_rate=spec["lr"],
            max_steps=spec["steps"], lr_scheduler_type="constant", warmup_steps=0,
            weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch", seed=spec["seed"],
            bf16=spec.get("precision") == "bf16", fp16=False, gradient_checkpointing=False,
            use_cpu=True, disable_dropout=True, temperature=1.0, top_p=1.0, top_k=0, logging_steps=1,
            save_strategy="no", report_to=[], log_completions=False, dataloader_num_workers=0,
            num_iterations=1, normalize_advantages=False)
        tok = AutoTokenizer.from_pretrained(spec["model"])
        model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
        data = Dataset.from_list(task_rows(spec))
        trainer = RLOOTrainer(model=model, reward_funcs=reward_of(spec), args=args, train_dataset=data,
                              processing_class=tok, callbacks=[Timer()])
        trainer.train()
    return {"step_s": times,
            "tokens": [r["completions/mean_length"] * batch for r in logs],
            "reward": [r["reward"] for r in logs], "base_rss_mb": base_rss, "sample_s": sampling}


def run_floor(spec: dict) -> dict:
    """The floor: HF ``generate`` + one reference forward + one training forward/backward per
    micro-batch + AdamW step, on the batch scorealign would use. No reward, no logging."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from scorealign.engine.rollout import completion_logprobs

    base_rss = rss_now_mb()
    torch.manual_seed(spec["seed"])
    tok = AutoTokenizer.from_pretrained(spec["model"])
    policy = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32).eval()
    ref.requires_grad_(False)
    opt = torch.optim.AdamW(policy.parameters(), lr=spec["lr"], weight_decay=0.0)
    tok.padding_side = "left"
    texts = prompts(spec)
    n, k = spec["prompts_per_step"], spec["k"]
    times, tokens = [], []
    for step in range(spec["steps"]):
        t0 = time.perf_counter()
        enc = tok(texts[step * n:(step + 1) * n], return_tensors="pt", padding=True)
        p_ids, p_mask = (enc[key].repeat_interleave(k, 0) for key in ("input_ids", "attention_mask"))
        with torch.inference_mode():
            policy.eval()
            out = policy.generate(input_ids=p_ids, attention_mask=p_mask, do_sample=True,
                                  max_new_tokens=spec["max_new"], top_k=0, top_p=1.0,
                                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            c_ids = out[:, p_ids.shape[1]:]                                   # [B, C]
            after_eos = (c_ids == tok.eos_token_id).long().cumsum(1) - (c_ids == tok.eos_token_id).long()
            c_mask = (after_eos == 0).long()
            ref_lp = completion_logprobs(ref, p_ids, p_mask, c_ids, c_mask)   # [B, C]
        c_ids, c_mask, ref_lp = c_ids.clone(), c_mask.clone(), ref_lp.clone()  # leave inference mode
        policy.train()
        mb = spec["micro_batch"]
        for i in range(0, p_ids.shape[0], mb):
            sl = slice(i, i + mb)
            lp = completion_logprobs(policy, p_ids[sl], p_mask[sl], c_ids[sl], c_mask[sl])
            (-(lp.sum(1) - ref_lp[sl].sum(1)).mean() / (p_ids.shape[0] // mb)).backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
        tokens.append(float(c_mask.sum()))
    return {"step_s": times, "tokens": tokens, "reward": [], "base_rss_mb": base_rss}


# ------------------------------------------------------------------------------------------------ DPO


def dpo_pairs(path: Path, n: int, seed: int, chat: bool = False) -> Path:
    """Synthetic preference pairs (JSONL prompt/chosen/rejected): chosen says 'yes' more often."""
    import random

    from scorealign.core.tiny import TOY_WORDS

    rng = random.Random(seed)
    words = lambda m, w: " ".join(rng.choice(w) for _ in range(m))  # noqa: E731
    if chat:                                      # a chat model: messages, answers in words
        said = lambda yes: [{"role": "assistant", "content": ("Yes, " if yes else "No, ")  # noqa: E731
                            + words(rng.randint(6, 14), TOY_WORDS)}]
        return write_jsonl(path, [{"prompt": p, "chosen": said(True), "rejected": said(False)}
                                  for p in prompts({"seed": seed, "chat": True})[:n]])
    with open(path, "w") as f:
        for p in prompts({"seed": seed})[:n]:
            m = rng.randint(6, 14)
            f.write(json.dumps({"prompt": p, "chosen": " " + words(m, ["yes"] * 8 + list(TOY_WORDS)),
                                "rejected": " " + words(m, TOY_WORDS)}) + "\n")
    return path


def run_ours_dpo(spec: dict) -> dict:
    """scorealign DPO: TrainConfig(algo='dpo', dataset=pairs.jsonl) through train()."""
    from scorealign.errors import ConfigError
    from scorealign.train import TrainConfig, train

    base_rss = rss_now_mb()
    with tempfile.TemporaryDirectory() as out:
        data = dpo_pairs(Path(out) / "pairs.jsonl", 256, spec["seed"], spec.get("chat", False))
        try:
            cfg = TrainConfig(model=spec["model"], dataset=str(data), algo="dpo", beta=spec["beta"],
                              prompts_per_step=spec["pairs_per_step"], steps=spec["steps"],
                              micro_batch_size=spec["micro_batch"], lr=spec["lr"],
                              seed=spec["seed"], output_dir=str(Path(out) / "run"),
                              precision=spec.get("precision", "fp32"), **spec.get("ours_extra", {}))
        except (ConfigError, TypeError) as e:
            return {"unavailable": f"scorealign DPO not available ({str(e)[:80]})"}
        t0 = time.perf_counter()
        run = train(cfg)
        total = time.perf_counter() - t0
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    step_s = [r["time/step_s"] for r in rows if "time/step_s" in r] or [total / spec["steps"]] * spec["steps"]
    return {"step_s": step_s, "tokens": [0.0] * len(step_s), "reward": [], "base_rss_mb": base_rss}


def run_trl_dpo(spec: dict) -> dict:
    """TRL's DPOTrainer (sigmoid loss, reference model resident, no precomputed ref log-probs)."""
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    base_rss = rss_now_mb()
    times = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t0)

    pairs_per_mb = spec["micro_batch"] // 2                      # TRL counts pairs, we count sequences
    with tempfile.TemporaryDirectory() as out:
        pairs = dpo_pairs(Path(out) / "pairs.jsonl", 256, spec["seed"], spec.get("chat", False))
        data = load_dataset("json", data_files=str(pairs), split="train")
        args = DPOConfig(
            output_dir=out, per_device_train_batch_size=pairs_per_mb,
            gradient_accumulation_steps=spec["pairs_per_step"] // pairs_per_mb, beta=spec["beta"],
            learning_rate=spec["lr"], max_steps=spec["steps"], lr_scheduler_type="constant",
            weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch", seed=spec["seed"],
            bf16=spec.get("precision") == "bf16",
            fp16=False, gradient_checkpointing=False, use_cpu=True, logging_steps=1,
            save_strategy="no", report_to=[], dataloader_num_workers=0, max_length=None)
        tok = AutoTokenizer.from_pretrained(spec["model"])
        model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
        DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tok,
                   callbacks=[Timer()]).train()
    return {"step_s": times, "tokens": [0.0] * len(times), "reward": [], "base_rss_mb": base_rss}


WORKERS = {"ours": run_ours, "trl": run_trl, "floor": run_floor, "ours_dpo": run_ours_dpo,
           "trl_dpo": run_trl_dpo}


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    torch.set_num_threads(spec.get("threads", torch.get_num_threads()))
    if spec["worker"].startswith("trl"):
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from scorealign.core.models import quiet_transformers

    quiet_transformers()
    result = WORKERS[spec["worker"]](spec)
    result["peak_rss_mb"] = peak_rss_mb()
    result["load"] = os.getloadavg()
    Path(sys.argv[2]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
