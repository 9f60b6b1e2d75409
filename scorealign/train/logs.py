"""What stage 6 of the loop logs: rollout statistics, global reductions, and the table of sample
completions (``completions.jsonl``, the trackers' tables)."""

from __future__ import annotations

import torch

# Metrics summed over processes (counts); every other metric is averaged.
SUMMED_METRICS = ("reward/skipped",)


def rollout_metrics(batch, kl, accelerator, source_scores: dict) -> dict:
    """Statistics of the samples drawn this step (the first ``batch.fresh`` rows): rewards over
    the global batch, the rest per process; with several reward sources summed, each source's
    mean (TRL's ``rewards/{name}/mean``). Dataset rows (offline) have none."""
    n_new = batch.fresh
    if n_new == 0:
        return {}
    scores = accelerator.gather(batch.scores[:n_new])
    per_source = {f"rewards/{name}/mean": part[:n_new].nanmean()
                  for name, part in source_scores.items()}
    return {"reward/mean": scores.mean(), "reward/std": scores.std(unbiased=False),
            "kl": kl[:n_new].mean(), "entropy": batch.entropy[:n_new].mean(),
            "completion_len": batch.completion_mask[:n_new].sum(1).float().mean(),
            "truncated_frac": batch.truncated[:n_new].float().mean(),
            "reward/skipped": (~batch.valid[:n_new]).float().sum(), **per_source}


def reduce_metrics(metrics: dict, accelerator) -> dict[str, float]:
    """Global metrics: the mean over processes, except ``SUMMED_METRICS`` (counts), summed."""
    values = torch.tensor([float(v) for v in metrics.values()], device=accelerator.device)
    reduced = accelerator.reduce(values, "mean").tolist()
    world = accelerator.num_processes
    return {name: value * world if name in SUMMED_METRICS else value
            for name, value in zip(metrics, reduced)}


def completion_rows(batch, source_scores: dict, accelerator, limit: int = 64) -> list[dict]:
    """The step's fresh completions, all processes (``gather_object``; call it on every
    process): prompt, completion, each reward source's score, the summed reward, the
    advantage (mean over completion tokens for token-level algorithms) and, where the reward
    keeps them, its details (the verifiers' failure reasons). At most ``limit`` rows.
    Rows read from a dataset are not sampled completions: none."""
    from accelerate.utils import gather_object

    n = min(batch.fresh, len(batch.completions))
    adv = batch.advantages
    if adv is not None and adv.dim() == 2:
        mask = batch.completion_mask.float()
        adv = (adv * mask).sum(1) / mask.sum(1).clamp(min=1)
    rows = []
    for i in range(n):
        row = {"prompt": prompt_text(batch.prompts[i]), "completion": batch.completions[i]}
        row.update({f"reward/{name}": float(part[i]) for name, part in source_scores.items()
                    if part.shape[0] == batch.size})     # not after a selection (RAFT)
        row["reward"] = float(batch.scores[i])
        row["advantage"] = float(adv[i]) if adv is not None and adv.shape[0] > i else None
        if len(batch.details) > i and batch.details[i]:   # verifiers: failures, limits hit
            row["details"] = batch.details[i]
        rows.append(row)
    return gather_object(rows)[:limit]


def prompt_text(prompt) -> str:
    """A prompt as one string: chat messages as 'role: content' lines."""
    if isinstance(prompt, list):
        return "\n".join(f"{m.get('role', '?')}: {m.get('content', '')}" for m in prompt)
    return str(prompt)
