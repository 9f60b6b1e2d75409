"""Loading the policy, the reference and the tokenizer; the accelerate setup."""

from __future__ import annotations

import itertools
from pathlib import Path

import torch

from ..errors import ConfigError, one_line
from . import gguf

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_accelerator(log_with: list | None = None):
    """An ``Accelerator`` for the current launch (1 process, torchrun, or accelerate launch);
    ``log_with``: accelerate tracker objects (``train.tracking``), started by the caller.

    Without an accelerator we pass ``cpu=True``: accelerate only sets up multi-process CPU
    (gloo) training under torchrun when told it runs on CPU.
    """
    from accelerate import Accelerator

    has_accelerator = torch.cuda.is_available() or (
        hasattr(torch, "xpu") and torch.xpu.is_available()) or torch.backends.mps.is_available()
    return Accelerator(cpu=not has_accelerator, log_with=log_with or None)


def is_main_process() -> bool:
    """Whether this is the main process of the launch (rank 0; True without a launcher)."""
    from accelerate import PartialState

    return PartialState().is_main_process


def model_device(model) -> torch.device:
    """The device of ``model``'s weights, where its inputs must be: ``model.device`` for
    transformers and peft models and ``AdapterDisabled``, else its first parameter's or buffer's."""
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(itertools.chain(model.parameters(), model.buffers())).device


def quiet_transformers() -> None:
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def resolve_model_path(name: str, run_dir: Path, seed: int, is_main: bool) -> str:
    """'tiny' -> a random tiny Llama built (once) in ``run_dir/base_model``; an embedded alias
    or a ``.gguf`` file -> its dequantised cache folder (``gguf.resolve``); else ``name``."""
    if name != "tiny":
        return gguf.resolve(name)
    from .tiny import build_tiny_model

    path = run_dir / "base_model"
    if is_main and not (path / "config.json").exists():
        build_tiny_model(path, arch="llama", hidden=64, layers=2, heads=4, seed=seed)
    return str(path)


def looks_local(path: str) -> bool:
    """True when ``path`` is meant as a local path, not a hub id (``org/name``): it exists, is
    absolute, starts with ``./``, ``../`` or ``~``, or has more than one ``/``."""
    return (Path(path).expanduser().exists() or Path(path).is_absolute()
            or path.startswith(("./", "../", "~", ".\\", "..\\")) or path.count("/") > 1)


def load_pretrained(auto_cls, path: str, what: str, trust_remote_code: bool = False,
                    tokenizer: bool = True, **kwargs):
    """(model, tokenizer or None) from ``auto_cls.from_pretrained``, safetensors preferred.

    A local-looking ``path`` that does not exist, and any failure to load, is a one-line
    ConfigError naming ``what`` and ``path``. ``kwargs`` go to the model's ``from_pretrained``.
    """
    src = checked_source(path, what)
    local = Path(src)
    if local.is_dir() and any(local.glob("*.safetensors")):
        kwargs.setdefault("use_safetensors", True)
    tok = load_tokenizer(path, what, trust_remote_code) if tokenizer else None
    try:
        model = auto_cls.from_pretrained(src, trust_remote_code=trust_remote_code, **kwargs)
    except Exception as e:
        if "Weights only load failed" in str(e) or type(e).__name__ == "UnpicklingError":
            raise ConfigError(f"cannot load {what} {path!r}: its weights are a pickle "
                              "(pytorch_model.bin) holding more than tensors, which scorealign "
                              "never unpickles; convert it to model.safetensors") from None
        raise ConfigError(f"cannot load {what} {path!r}: {one_line(e)}{hub_hint(path)}") from e
    return model, tok


def checked_source(path: str, what: str = "model") -> str:
    """What ``from_pretrained`` should read for ``path``: a local folder (checked to exist), the
    cache folder of an embedded alias or ``.gguf`` file, or a hub id."""
    local = Path(path).expanduser()
    if looks_local(path) and not local.exists():
        raise ConfigError(f"{what} not found: {path!r} (no such directory)")
    return str(local) if local.exists() and not path.endswith(".gguf") else gguf.resolve(path)


def load_tokenizer(path: str, what: str = "model", trust_remote_code: bool = False):
    """The tokenizer (with its chat template) of the model ``path``; a missing or unreadable
    one is a one-line ConfigError naming ``what`` and ``path``."""
    from transformers import AutoTokenizer

    src = checked_source(path, what)
    try:
        return AutoTokenizer.from_pretrained(src, trust_remote_code=trust_remote_code)
    except Exception as e:
        raise ConfigError(f"cannot load the tokenizer of {what} {path!r}: {one_line(e)}"
                          f"{hub_hint(path)}") from e


def hub_hint(path: str) -> str:
    hint = gguf.missing_hint(path)
    return f" ({hint})" if hint else ""


def disable_dropout(model):
    """Every ``nn.Dropout`` of ``model`` set to p = 0 (log-probs and scores must be reproducible
    in train mode too); returns ``model``."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def load_causal_lm(path: str, cfg, trainable: bool, what: str = "model"):
    """``AutoModelForCausalLM`` (safetensors preferred, dropout disabled) in ``cfg.dtype``."""
    from transformers import AutoModelForCausalLM

    model, _ = load_pretrained(AutoModelForCausalLM, path, what, cfg.trust_remote_code,
                               tokenizer=False, dtype=DTYPES[cfg.dtype])
    disable_dropout(model)
    model.train(trainable)
    model.requires_grad_(trainable)
    return model


def load_models(cfg, run_dir: Path, accelerator, policy_path: Path | None = None,
                reference: bool = True):
    """(policy, reference, tokenizer). The reference is frozen, in eval mode, not wrapped
    (None when ``reference`` is False: SFT needs none).

    ``policy_path`` (a checkpoint's ``model/`` on resume) overrides where the policy is read from;
    the reference always comes from ``cfg.ref_model`` or the initial ``cfg.model``.
    """
    quiet_transformers()
    path = resolve_model_path(cfg.model, run_dir, cfg.seed, accelerator.is_main_process)
    accelerator.wait_for_everyone()
    tokenizer = load_tokenizer(path, "model", cfg.trust_remote_code)
    if cfg.lora_r:                    # one resident copy: pi_ref is the policy, adapter off
        policy = with_lora(load_causal_lm(path, cfg, trainable=False), cfg, policy_path)
        ref_model = (AdapterDisabled(policy) if cfg.ref_model is None else
                     load_causal_lm(cfg.ref_model, cfg, False, "ref_model").to(accelerator.device))
        return policy, ref_model, tokenizer
    policy = load_causal_lm(str(policy_path or path), cfg, trainable=True)
    ref_model = (load_causal_lm(cfg.ref_model or path, cfg, False,
                                "ref_model" if cfg.ref_model else "model").to(accelerator.device)
                 if reference else None)
    return policy, ref_model, tokenizer


# ------------------------------------------------------------------------------------------ LoRA


def import_peft():
    try:
        import peft
    except ImportError:
        raise ConfigError("lora_r > 0 needs peft: pip install 'scorealign[peft]'") from None
    return peft


def with_lora(base, cfg, adapter_path: Path | None = None):
    """Wrap ``base`` in a trainable LoRA adapter (new, or read from ``adapter_path`` on resume)."""
    peft = import_peft()
    if adapter_path is not None:
        return peft.PeftModel.from_pretrained(base, str(adapter_path), is_trainable=True)
    targets = cfg.lora_target_modules
    lora = peft.LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                           target_modules="all-linear" if targets == ("all-linear",) else list(targets),
                           task_type="CAUSAL_LM")
    return peft.get_peft_model(base, lora)


class AdapterDisabled(torch.nn.Module):
    """pi_ref under LoRA: the policy's own weights with its adapter switched off (no second copy).

    Called like a causal LM (``ref(input_ids=..., attention_mask=...)``); holds no parameters.
    """

    def __init__(self, policy):
        super().__init__()
        self._policy = [policy]                   # a list: not registered as a submodule

    @property
    def config(self):
        return self._policy[0].config

    @property
    def dtype(self):
        return self._policy[0].dtype

    @property
    def device(self):
        return self._policy[0].device

    def get_base_model(self):
        return self._policy[0].get_base_model()

    def forward(self, *args, **kwargs):
        policy = self._policy[0]
        with policy.disable_adapter():
            return policy(*args, **kwargs)


def is_lora(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def merged_state_dict(model) -> dict:
    """A LoRA model's base-model state dict with every adapter folded in (W + scale * B A),
    computed without modifying ``model``; keys are the plain transformers names."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    base = model.get_base_model()
    state = {k: v for k, v in base.state_dict().items() if "lora_" not in k}
    for name, module in base.named_modules():
        if isinstance(module, BaseTunerLayer) and hasattr(module, "base_layer"):
            with torch.no_grad():
                weight = module.base_layer.weight.detach().clone()
                for adapter in module.active_adapters:
                    weight += module.get_delta_weight(adapter)
            state.pop(f"{name}.base_layer.weight")
            state[f"{name}.weight"] = weight
            if f"{name}.base_layer.bias" in state:
                state[f"{name}.bias"] = state.pop(f"{name}.base_layer.bias")
    return state
