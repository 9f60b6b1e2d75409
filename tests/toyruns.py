"""Shared by the toy-task training tests (test_ppo_raft, test_grpo): one run's config and its
logged metrics."""

from __future__ import annotations

import json

from scorealign.train import TrainConfig


def run_cfg(tiny, out, **kw) -> TrainConfig:
    base = dict(model=tiny, dataset="toy", rewards=("builtin:count:yes",), prompts_per_step=8,
                k=4, micro_batch_size=16, max_new_tokens=12, lr=3e-3, beta=0.02,
                output_dir=str(out))
    return TrainConfig(**{**base, **kw})


def metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
