"""Stage 1 of the loop: where a step's batch comes from.

  online   k samples per prompt from the current policy, scored by the reward source
  offline  completions read from a dataset: scored completions (CoPG, k per prompt), preference
           pairs (DPO / IPO: chosen first, scores 1 / 0) or demonstrations (SFT, k = 1).
           Reference log-probs are computed once per example and cached, not once per epoch.
  mixed    online samples plus groups drawn from a replay buffer of past scored samples (CoPG)
Which one a run uses is its algorithm's data kind (``TrainConfig.data_kind``, from the registry).

Every source is a ``BatchSource``: ``source.batch(policy, step, rank, world)`` returns this
process's share of the step as one ``Rollout`` of whole groups (the k completions of one prompt,
contiguous) with ``scores`` and ``valid`` set, and ``fresh`` = the number of rows at its front
sampled in this very step (what the rollout metrics describe). Prompt order: consecutive slices
of a seeded permutation (``step_prompt_indices``), the same on every process; process r takes
every world-th group.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch

from ..core import seeding
from ..core.batch import Rollout, concat
from ..core.models import model_device
from ..core.precision import full_precision
from ..data.formats import (
    group_by_prompt,
    load_preferences,
    load_prompt_rows,
    load_scored,
    load_sft,
    render_prompt,
)
from ..data.readers import Row, row_location
from ..engine.rollout import completion_logprobs, generate_rollout, pad_rows, pad_token_id
from ..errors import DataError
from ..rewards.sources import reward_details, reward_parts, score_batch

Tensor = torch.Tensor

# Dataset columns of a completion, not of its prompt: dropped from the evaluation prompt rows.
COMPLETION_FIELDS = ("completion", "score", "chosen", "rejected", "truncated", "sample_index",
                     "_file", "_line")


class BatchSource(Protocol):
    """Where a step's batch comes from; its state is checkpointed by the loop, per process."""

    def batch(self, policy, step: int, rank: int, world: int) -> Rollout:
        """This process's whole groups of ``step``, scored (``scores``, ``valid``, ``fresh`` set)."""

    def prompt_rows(self) -> list[Row]:
        """The prompt rows (prompt + reward fields) to evaluate on when no eval_dataset is given."""

    def state_dict(self) -> dict[str, dict]:
        """Per-process state by name (saved as ``checkpoints/{name}-step-N/rank-R.pt``); {} if none."""

    def load_state_dict(self, state: dict[str, dict]) -> None:
        """Restore what ``state_dict`` returned."""

    def source_scores(self) -> dict[str, Tensor]:
        """Each reward source's unweighted scores [fresh] of the last batch's fresh rows, when
        several sources are summed ({} otherwise); NaN where unknown (a skipped row)."""


def step_prompt_indices(n_rows: int, n: int, seed: int, step: int) -> list[int]:
    """The ``n`` global prompts (or groups) of ``step``: consecutive slices of a seeded
    permutation of all rows, a fresh permutation per pass over the data."""
    out, pos = [], step * n
    while len(out) < n:
        epoch, offset = divmod(pos, n_rows)
        perm = list(range(n_rows))
        seeding.python_rng(seed, "prompt_order", epoch).shuffle(perm)
        take = min(n - len(out), n_rows - offset)
        out += perm[offset:offset + take]
        pos += take
    return out


class OnlineSource:
    """k samples per prompt from the current policy (KV-cached sampler), scored by ``reward``."""

    def __init__(self, cfg, rows: list[Row], tokenizer, ref_model, reward):
        self.cfg, self.rows, self.tokenizer, self.ref_model, self.reward = (
            cfg, rows, tokenizer, ref_model, reward)

    def batch(self, policy, step: int, rank: int, world: int, n_prompts: int | None = None
              ) -> Rollout:
        cfg, k = self.cfg, self.cfg.k
        n = n_prompts or cfg.prompts_per_step
        idx = step_prompt_indices(len(self.rows), n, cfg.seed, step)[rank::world]
        prompts = [self.rows[i]["prompt"] for i in idx]
        # Host on purpose: a seeded CPU generator draws the same uniforms on every device (the
        # sampler moves them to the model's device).
        uniforms = torch.rand(n * k, cfg.max_new_tokens,            # one row of draws per sample
                              generator=seeding.generator(cfg.seed, "rollout", step))
        uniforms = uniforms.view(n, k, -1)[rank::world].flatten(0, 1)
        batch = generate_rollout(policy, self.ref_model, self.tokenizer, prompts, None, k, uniforms,
                                 cfg.max_prompt_tokens, cfg.temperature, cfg.top_p)
        fields = {key: [self.rows[i].get(key) for i in idx for _ in range(k)]
                  for key in self.rows[0] if key != "prompt" and not key.startswith("_")}
        with full_precision(model_device(policy)):          # reward models: their own dtype
            batch.scores, batch.valid = score_batch(self.reward, batch.prompts, batch.completions,
                                                    fields, cfg.on_reward_error)
        batch.fresh = batch.size
        self.parts = reward_parts(self.reward, batch.size)
        details = reward_details(self.reward) or []          # for completions.jsonl
        batch.details = details if len(details) == batch.size else []
        return batch

    def prompt_rows(self) -> list[Row]:
        return self.rows

    def source_scores(self) -> dict[str, Tensor]:
        return getattr(self, "parts", {})

    def state_dict(self) -> dict[str, dict]:
        return {}

    def load_state_dict(self, state: dict[str, dict]) -> None:
        pass


def tokenize_example(tokenizer, row: Row, max_prompt_tokens: int, max_completion_tokens: int
                     ) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids) of a dataset row, tokenized as the sampler sees them.

    The prompt is rendered as for sampling (chat template with the generation prompt for message
    lists). A string completion gets EOS appended unless the row says it was ``truncated``; a
    conversational one is the chat template's rendering of the whole conversation minus the
    prompt's (so it ends with the template's end-of-turn). Over-long prompts keep their last
    tokens, over-long completions their first.
    """
    prompt, completion = row["prompt"], row["completion"]
    if isinstance(prompt, str):
        p_ids = tokenizer(prompt)["input_ids"]
        c_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
        if not row.get("truncated") and tokenizer.eos_token_id is not None:
            c_ids = c_ids + [tokenizer.eos_token_id]
    else:
        p_text = render_prompt(tokenizer, prompt)
        full = tokenizer.apply_chat_template(prompt + completion, tokenize=False)
        if not full.startswith(p_text):
            raise DataError(f"{row_location(row)}: the chat template renders prompt + completion "
                            "with a different prefix than the prompt alone; cannot split them")
        p_ids = tokenizer(p_text, add_special_tokens=False)["input_ids"]
        c_ids = tokenizer(full[len(p_text):], add_special_tokens=False)["input_ids"]
    if not c_ids or (len(c_ids) == 1 and c_ids[0] == tokenizer.eos_token_id):
        raise DataError(f"{row_location(row)}: field 'completion' has no tokens the tokenizer "
                        "can represent")
    return p_ids[-max_prompt_tokens:], c_ids[:max_completion_tokens]


class OfflineSource:
    """Groups of k dataset rows (``prompt``, ``completion``, ``score``), tokenized up front and
    with reference log-probs computed once per example (cached), served as rollouts."""

    def __init__(self, cfg, groups: list[list[Row]], tokenizer, ref_model):
        self.cfg, self.groups, self.tokenizer, self.ref_model = cfg, groups, tokenizer, ref_model
        self.k = len(groups[0])
        # Every example tokenized before the first step (as TRL's trainers do): a row the
        # tokenizer cannot represent or split fails at start, not hours in, and no step pays for it.
        self.tokens = [[tokenize_example(tokenizer, row, cfg.max_prompt_tokens, cfg.max_new_tokens)
                        for row in group] for group in groups]         # [group][j] -> (p ids, c ids)
        self.ref_cache: dict[tuple[int, int], Tensor] = {}              # (group, j) -> [C_j]

    def source_scores(self) -> dict[str, Tensor]:
        return {}

    def batch(self, policy, step: int, rank: int, world: int) -> Rollout:
        cfg = self.cfg
        idx = step_prompt_indices(len(self.groups), cfg.prompts_per_step, cfg.seed, step)[rank::world]
        keys = [(g, j) for g in idx for j in range(self.k)]
        rows = [self.groups[g][j] for g, j in keys]
        tokens = [self.tokens[g][j] for g, j in keys]
        prompt_ids, prompt_mask = pad_rows([p for p, _ in tokens], pad_token_id(self.tokenizer),
                                           left=True)
        completion_ids, completion_mask = pad_rows([c for _, c in tokens],
                                                   pad_token_id(self.tokenizer), left=False)
        batch = Rollout(prompt_ids=prompt_ids, prompt_mask=prompt_mask,
                        completion_ids=completion_ids, completion_mask=completion_mask,
                        logprobs=None, ref_logprobs=torch.zeros(completion_ids.shape),
                        truncated=torch.tensor([bool(r.get("truncated")) for r in rows]),
                        k=self.k, prompts=[r["prompt"] for r in rows],
                        completions=[r["completion"] for r in rows],
                        scores=torch.tensor([float(r.get("score", 0.0)) for r in rows]),
                        valid=torch.ones(len(rows), dtype=torch.bool))
        if self.ref_model is not None:
            batch.ref_logprobs = self.reference_logprobs(keys, batch)
        return batch

    def prompt_rows(self) -> list[Row]:
        """One row per group: its first row without the completion's columns."""
        return [{**{k: v for k, v in g[0].items() if k not in COMPLETION_FIELDS},
                 "prompt": g[0]["prompt"]} for g in self.groups]

    def state_dict(self) -> dict[str, dict]:
        return {}

    def load_state_dict(self, state: dict[str, dict]) -> None:
        pass

    def reference_logprobs(self, keys: list[tuple[int, int]], batch: Rollout) -> Tensor:
        """[b, C] log pi_ref of the batch's completions: cached rows copied, the rest computed
        in ONE inference pass (as the online rollout's reference forward; no activations are
        kept, and one pass over all rows beats one per micro-batch on small GEMMs) and cached."""
        missing = [i for i, key in enumerate(keys) if key not in self.ref_cache]
        if missing:
            # The dataset batch is built on the host; the reference runs on its own device.
            mb = batch.select(torch.tensor(missing, dtype=torch.long)).to(
                model_device(self.ref_model))
            with torch.inference_mode():
                lp = completion_logprobs(self.ref_model, mb.prompt_ids, mb.prompt_mask,
                                         mb.completion_ids, mb.completion_mask,
                                         self.cfg.temperature)                   # [m, C']
            # The cache stays on the host (one entry per example, kept for the whole run: not
            # device memory); the loop moves the assembled batch to the device.
            lp, lengths = lp.cpu(), mb.completion_mask.sum(1).tolist()
            for row, i in enumerate(missing):
                self.ref_cache[keys[i]] = lp[row, :lengths[row]].clone()
        out = torch.zeros(batch.completion_ids.shape)                            # host, as batch
        for i, key in enumerate(keys):
            out[i, :len(self.ref_cache[key])] = self.ref_cache[key]
        return out


class ReplayBuffer:
    """The last ``capacity`` scored groups this process sampled (FIFO), drawn without
    replacement with a per-step seeded generator. Stored rows keep their sampling-time scores and
    reference log-probs; CoPG needs nothing else (no importance weights)."""

    def __init__(self, capacity: int):
        self.capacity, self.groups = capacity, []

    def add(self, batch: Rollout) -> None:
        clean = Rollout(**{**batch.__dict__, "advantages": None, "values": None, "returns": None,
                                   "fresh": 0})
        for g in range(batch.size // batch.k):
            self.groups.append(clean.select(torch.arange(g * batch.k, (g + 1) * batch.k)))
        self.groups = self.groups[-self.capacity:]

    def sample(self, n: int, generator: torch.Generator) -> Rollout:
        picks = torch.randperm(len(self.groups), generator=generator)[:n].tolist()
        return concat([self.groups[i] for i in picks])

    def state_dict(self) -> dict:
        return {"groups": [g.__dict__ for g in self.groups]}

    def load_state_dict(self, state: dict) -> None:
        self.groups = [Rollout(**g) for g in state["groups"]]


class MixedSource:
    """Each step: ``prompts_per_step - n_replay`` prompts sampled online and ``n_replay`` groups
    from the replay buffer (once it holds that many; until then, all online). The fresh groups
    join the buffer after the step is assembled."""

    def __init__(self, cfg, online: OnlineSource, world: int):
        self.cfg, self.online = cfg, online
        self.n_replay = round(cfg.replay_ratio * cfg.prompts_per_step / world) * world
        self.buffer = ReplayBuffer(max(1, cfg.replay_size // world))

    def batch(self, policy, step: int, rank: int, world: int) -> Rollout:
        n_local = self.n_replay // world
        use_replay = n_local > 0 and len(self.buffer.groups) >= n_local
        n_online = self.cfg.prompts_per_step - (self.n_replay if use_replay else 0)
        fresh = self.online.batch(policy, step, rank, world, n_prompts=n_online)
        parts = [fresh]
        if use_replay:
            gen = seeding.generator(self.cfg.seed, "replay", step, rank)
            parts.append(self.buffer.sample(n_local, gen))
        self.buffer.add(fresh)
        return concat(parts)                        # fresh rows first: ``fresh`` = fresh.size

    def prompt_rows(self) -> list[Row]:
        return self.online.prompt_rows()

    def source_scores(self) -> dict[str, Tensor]:
        return self.online.source_scores()

    def state_dict(self) -> dict[str, dict]:
        return {"replay": self.buffer.state_dict()}

    def load_state_dict(self, state: dict[str, dict]) -> None:
        self.buffer.load_state_dict(state["replay"])


def preference_groups(cfg) -> list[list[Row]]:
    """Preference pairs as (chosen, rejected) groups of 2, scored 1 and 0."""
    return [[{**row, "completion": row["chosen"], "score": 1.0},
             {**row, "completion": row["rejected"], "score": 0.0}]
            for row in load_preferences(cfg.dataset, cfg.dataset_split)]


def demonstration_groups(cfg) -> list[list[Row]]:
    """Demonstrations, one per group."""
    return [[row] for row in load_sft(cfg.dataset, cfg.dataset_split)]


def scored_groups(cfg) -> list[list[Row]]:
    """k scored completions per group: a prompt with n rows gives n // k groups, its remaining
    rows are left out and counted in the printed summary."""
    rows = load_scored(cfg.dataset, cfg.dataset_split)
    groups, left_out = [], 0
    for same_prompt in group_by_prompt(rows):
        n = len(same_prompt) // cfg.k * cfg.k
        groups += [same_prompt[i:i + cfg.k] for i in range(0, n, cfg.k)]
        left_out += len(same_prompt) - n
    if not groups:
        raise DataError(f"{cfg.dataset}: no prompt has k={cfg.k} scored completions (CoPG "
                        "compares the completions of the same prompt; lower k)")
    if left_out:
        print(f"offline data: {len(groups)} groups of k={cfg.k}; {left_out} of {len(rows)} rows "
              "left out (their prompt's count is not a multiple of k)")
    return groups


# How each data kind of the registry that is read from ``dataset`` becomes groups of rows.
OFFLINE_READERS: dict[str, Callable] = {"scored": scored_groups, "pairs": preference_groups,
                                        "demonstrations": demonstration_groups}


def offline_groups(cfg, tokenizer=None) -> list[list[Row]]:
    """The dataset as groups of rows for the run's data kind (``cfg.data_kind``)."""
    return OFFLINE_READERS[cfg.data_kind](cfg)


def build_source(cfg, tokenizer, ref_model, reward: Callable, world: int) -> BatchSource:
    """The batch source of ``cfg.data_kind``; ``reward()`` builds the reward (online kinds only)."""
    if cfg.data_kind in OFFLINE_READERS:
        return OfflineSource(cfg, offline_groups(cfg), tokenizer, ref_model)
    online = OnlineSource(cfg, load_prompt_rows(cfg), tokenizer, ref_model, reward())
    return MixedSource(cfg, online, world) if cfg.data_kind == "mixed" else online
