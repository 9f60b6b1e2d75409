"""TRL's argument names, understood by ``scorealign train`` and ``scorealign sft``.

{TRL name: (scorealign key, note)} maps the name to the key with a one-line notice;
{TRL name: (None, note)} refuses it, the note naming the key(s) that mean the same thing.
``core.config.resolve_trl_names`` applies these tables to YAML files and ``--key value`` flags
alike; ``docs/trl_names.md`` shows them as a table.
"""

from __future__ import annotations

_TRAIN_EPOCHS = ("train counts rollout steps: set steps (how many batches are sampled); "
                 "num_epochs here is TRL's num_iterations (optimisation passes over each rollout "
                 "batch), and dataset passes are an sft setting (scorealign sft --num_epochs)")
_BATCH = ("the global batch is prompts_per_step prompts x k completions, all processes together; "
          "micro_batch_size is the sequences per forward/backward on each process")

# Shared by train and sft.
COMMON: dict[str, tuple[str | None, str]] = {
    "learning_rate": ("lr", ""),
    "lr_scheduler_type": ("lr_schedule", "constant, linear or cosine"),
    "logging_steps": ("log_every", ""),
    "save_steps": ("save_every", ""),
    "eval_steps": ("eval_every", ""),
    "model_name_or_path": ("model", ""),
    "dataset_name": ("dataset", ""),
    "dataset_train_split": ("dataset_split", ""),
    "max_prompt_length": ("max_prompt_tokens", ""),
    "gradient_accumulation_steps": (None, "accumulation is derived: per-process batch / "
                                          "micro_batch_size"),
    "bf16": (None, "use precision: bf16 (bf16 compute over float32 weights, as TRL's bf16: true)"),
    "fp16": (None, "use dtype: float16"),
    "use_peft": (None, "set lora_r > 0 (train) to train a LoRA adapter"),
    "warmup_ratio": (None, "use warmup_steps (a number of optimizer steps)"),
}

TRAIN: dict[str, tuple[str | None, str]] = {
    **COMMON,
    "num_generations": ("k", "completions per prompt"),
    "rloo_k": ("k", "completions per prompt"),
    "max_completion_length": ("max_new_tokens", ""),
    "response_length": ("max_new_tokens", ""),
    "max_steps": ("steps", "rollout steps"),
    "num_iterations": ("num_epochs", "optimisation passes over each rollout batch"),
    "num_ppo_epochs": ("num_epochs", "optimisation passes over each rollout batch"),
    "num_mini_batches": ("num_minibatches", ""),
    "epsilon": ("clip_eps", "importance-ratio clip"),
    "cliprange": ("clip_eps", "importance-ratio clip"),
    "cliprange_value": ("value_clip_eps", ""),
    "kl_coef": ("beta", "KL coefficient"),
    "reward_funcs": ("rewards", "reward source specs"),
    "num_train_epochs": (None, _TRAIN_EPOCHS),
    "per_device_train_batch_size": (None, _BATCH),
    "generation_batch_size": (None, _BATCH),
    "loss_type": (None, "choose the algorithm with algo (rloo, reinforce, pg, ppo, raft, copg, "
                        "dpo, ipo)"),
}

SFT: dict[str, tuple[str | None, str]] = {
    **COMMON,
    "num_train_epochs": ("num_epochs", "passes over the dataset"),
    "max_length": (None, "set max_prompt_tokens and max_completion_tokens"),
    "max_completion_length": ("max_completion_tokens", ""),
    "max_steps": (None, "sft derives its steps from num_epochs x rows / batch_size"),
    "per_device_train_batch_size": (None, "batch_size is the examples per optimizer step, all "
                                          "processes together; micro_batch_size the examples "
                                          "per forward/backward on each process"),
}
