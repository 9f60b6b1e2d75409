"""The one batch type every algorithm consumes."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, replace

import torch

Tensor = torch.Tensor


@dataclass
class Rollout:
    """B = n_prompts * k sequences; the k samples of one prompt are contiguous.

    The whole completion is one action: log pi(y|x) = (logprobs * completion_mask).sum(-1)
    (token-level algorithms treat each token as an action). A batch source (``train/batches.py``)
    fills ``scores`` and ``valid``; the loop fills ``advantages`` and, for token-level algorithms,
    the critic fields ``values`` (set when the algorithm has a critic, ``algorithms/critic.py``)
    and ``returns`` (the critic's regression target). Rows read from a dataset have no
    sampling-time ``logprobs`` (None).
    """

    prompt_ids: Tensor        # [B, P] long, left-padded
    prompt_mask: Tensor       # [B, P] long
    completion_ids: Tensor    # [B, C] long, right-padded after EOS
    completion_mask: Tensor   # [B, C] long, 1 on completion tokens (EOS included)
    logprobs: Tensor | None   # [B, C] float, sampling-time log pi(y_t|...), 0 on padding (None: dataset rows)
    ref_logprobs: Tensor      # [B, C] float, log pi_ref(y_t|...), 0 on padding
    truncated: Tensor         # [B] bool, cut at max_new_tokens without EOS
    k: int                    # samples per prompt
    prompts: list = field(default_factory=list)       # B prompts (str or chat messages)
    completions: list = field(default_factory=list)   # B decoded completions (str)
    details: list = field(default_factory=list)       # B reward details per row (verifiers'), or []
    scores: Tensor | None = None                      # [B] r(x, y) from the reward source
    valid: Tensor | None = None                       # [B] bool, False where the reward was skipped
    entropy: Tensor | None = None                     # [B] mean per-token entropy at sampling
    fresh: int = 0            # rows at the front sampled in this very step (0: dataset or replay)
    advantages: Tensor | None = None  # [B] per sequence, [B, C] per token; a 0/1 weight for
    #                                   algorithms without advantages (copg, dpo, ipo, sft, raft)
    values: Tensor | None = None      # [B, C] critic field: V(x, y_<t) at sampling time ("old" values)
    returns: Tensor | None = None     # [B, C] critic field: its regression target (e.g. GAE returns)

    @property
    def size(self) -> int:
        return self.prompt_ids.shape[0]

    def input_ids(self) -> Tensor:
        """[B, P + C] prompt and completion concatenated."""
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)

    def attention_mask(self) -> Tensor:
        """[B, P + C]."""
        return torch.cat([self.prompt_mask, self.completion_mask], dim=1)

    def select(self, index: Tensor | slice) -> "Rollout":
        """Rows ``index`` (tensors and lists alike), padding trimmed to the longest kept row."""
        if isinstance(index, slice):
            index = torch.arange(self.size)[index]
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                out[f.name] = value[index]
            elif isinstance(value, list) and value:
                out[f.name] = [value[i] for i in index.tolist()]
        out["fresh"] = int((index < self.fresh).sum())   # still at the front if index is sorted
        return replace(self, **out).trimmed()

    def to(self, device) -> "Rollout":
        """Every tensor field on ``device`` (a no-op where it is already there)."""
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if isinstance(getattr(self, f.name), Tensor)})

    def trimmed(self) -> "Rollout":
        """Drop columns that are padding in every row (left of prompts, right of completions)."""
        p_keep = int(self.prompt_mask.sum(1).max().item()) if self.size else 0
        c_keep = int(self.completion_mask.sum(1).max().item()) if self.size else 0
        p_keep, c_keep = max(p_keep, 1), max(c_keep, 1)
        per_token = {name: value[:, :c_keep] for name in TOKEN_FIELDS
                     if isinstance(value := getattr(self, name), Tensor) and value.dim() == 2}
        return replace(self, prompt_ids=self.prompt_ids[:, -p_keep:],
                       prompt_mask=self.prompt_mask[:, -p_keep:], **per_token)


def concat(parts: list[Rollout]) -> Rollout:
    """Rows of several rollouts with the same k, re-padded to a common width (prompts on the
    left, completions on the right); a field missing from any part is dropped (None / [])."""
    parts = [p for p in parts if p.size]
    if len(parts) == 1:
        return parts[0]
    p_width = max(p.prompt_ids.shape[1] for p in parts)
    c_width = max(p.completion_ids.shape[1] for p in parts)
    out = {}
    for f in fields(Rollout):
        values = [getattr(p, f.name) for p in parts]
        if f.name in ("k", "fresh"):   # the first part's fresh rows stay at the front
            out[f.name] = values[0]
        elif all(isinstance(v, Tensor) for v in values):
            if f.name in ("prompt_ids", "prompt_mask"):  # pad ids are masked out: any id works
                values = [torch.nn.functional.pad(v, (p_width - v.shape[1], 0)) for v in values]
            elif f.name in TOKEN_FIELDS and values[0].dim() == 2:
                values = [torch.nn.functional.pad(v, (0, c_width - v.shape[1])) for v in values]
            out[f.name] = torch.cat(values)
        elif all(isinstance(v, list) and v for v in values):
            out[f.name] = [x for v in values for x in v]
        else:
            out[f.name] = [] if f.default_factory is not MISSING else None
    return Rollout(**out)


# [B, C] fields aligned with completion tokens (``advantages`` only when per token).
TOKEN_FIELDS = ("completion_ids", "completion_mask", "logprobs", "ref_logprobs", "advantages",
                "values", "returns")
