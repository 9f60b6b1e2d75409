"""Held-out evaluation during training: the mean reward of the policy's own samples.

Every ``eval_every`` steps (and before the first step and after the last), one completion per
eval prompt is sampled from the current policy and scored by the eval reward source. The draws
are fixed per prompt (the same uniforms at every evaluation, whatever the number of processes),
so successive evaluations differ only through the policy. Offline methods, whose training
batches are not their own samples, are judged by this. Results go to ``eval.jsonl``.
"""

from __future__ import annotations

import torch

from ..core import seeding
from ..data.formats import row_fields
from ..engine.generate import sample_prompts
from ..rewards.sources import score_batch


def heldout_uniforms(seed: int, indices: list[int], max_new_tokens: int) -> torch.Tensor:
    """The fixed sampling uniforms of eval prompts ``indices``: [n, max_new_tokens], one stream
    per prompt index (``seeding``: "heldout")."""
    return torch.stack([torch.rand(max_new_tokens, generator=seeding.generator(seed, "heldout", i))
                        for i in indices])


@torch.no_grad()
def sample_once(policy, tok, prompts: list, indices: list[int], seed: int, max_prompt_tokens: int,
                max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0, device=None):
    """One completion per prompt; prompt ``indices[i]`` always gets the same uniforms (seeded by
    ``seed`` and its index), whatever the batch or the process it is in.
    -> (completions, completion ids [n, C], mask [n, C], prompt ids [n, P], mask [n, P])."""
    got = sample_prompts(policy, tok, prompts, 1, heldout_uniforms(seed, indices, max_new_tokens),
                         max_prompt_tokens, temperature, top_p, device=device)
    return got.completions, got.completion_ids, got.completion_mask, got.prompt_ids, got.prompt_mask


class HeldOutEval:
    def __init__(self, cfg, rows: list[dict], tokenizer, reward):
        self.cfg, self.rows, self.tokenizer, self.reward = cfg, rows[:cfg.eval_prompts], tokenizer, reward

    @torch.no_grad()
    def __call__(self, policy, rank: int, world: int, device) -> dict[str, float]:
        """-> {'eval/reward': mean score, 'eval/completion_len': mean tokens} over all processes
        (process r evaluates prompts r, r + world, ...; rows whose reward fails are left out)."""
        cfg, tok = self.cfg, self.tokenizer
        was_training = policy.training
        policy.eval()
        total = torch.zeros(3, dtype=torch.float64)                 # score sum, rows, tokens
        idx = list(range(rank, len(self.rows), world))
        for chunk in [idx[i:i + cfg.micro_batch_size] for i in range(0, len(idx), cfg.micro_batch_size)]:
            rows = [self.rows[i] for i in chunk]
            completions, _, out_mask, *_ = sample_once(
                policy, tok, [r["prompt"] for r in rows], chunk, cfg.seed, cfg.max_prompt_tokens,
                cfg.max_new_tokens, cfg.temperature, cfg.top_p, device)
            scores, valid = score_batch(self.reward, [r["prompt"] for r in rows], completions,
                                        row_fields(rows), "skip")
            total += torch.tensor([scores[valid].sum().item(), valid.sum().item(),
                                   out_mask.sum().item()], dtype=torch.float64)
        policy.train(was_training)
        if world > 1:
            total = _all_reduce(total, device)
        n = max(total[1].item(), 1.0)
        return {"eval/reward": total[0].item() / n,
                "eval/completion_len": total[2].item() / max(len(self.rows), 1)}


def _all_reduce(total: torch.Tensor, device) -> torch.Tensor:
    import torch.distributed as dist

    out = total.to(device)
    dist.all_reduce(out)
    return out.cpu()
