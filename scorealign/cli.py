"""`scorealign` command line.

  scorealign train CONFIG.yaml [--key value ...]     align: pg / reinforce / rloo / ppo / raft / copg / dpo / ipo
  scorealign train --resume RUN_DIR [--key value]    continue a run from its latest checkpoint
  scorealign demo [--quick] [--toy] [--key value]   real model: SFT -> proxy reward -> methods -> gold report
  scorealign bandit [--key value]                    the CoPG toy bandit (arXiv 2406.19185 §5)
  scorealign sft CONFIG.yaml [--key value]           supervised fine-tuning (loss on completions)
  scorealign reward-model CONFIG.yaml [--key value]  train a Bradley-Terry reward model
  scorealign sample CONFIG.yaml [--key value]        k completions per prompt -> JSONL
  scorealign score CONFIG.yaml [--key value]         add reward-source scores to a JSONL
  scorealign eval-safety CONFIG.yaml [--key value]   harmful rate by language x global/local x category
  scorealign eval-winrate CONFIG.yaml [--key value]  policy vs baseline win-rate per language
  scorealign synth-prefs CONFIG.yaml [--key value]   multilingual preference pairs (arXiv 2407.02552)
  scorealign plot RUN_DIR [RUN_DIR ...] [--key value]  reward, KL, held-out reward of runs -> PNGs

Errors in the user's input print one line and exit with status 2 (no traceback); expected
faults (out of memory, disk full, broken pipe, a missing optional module) print one line and exit
non-zero; anything else is a bug: its traceback, then one line asking to report it.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from pathlib import Path

from .core.config import load_config, print_config_help
from .core.models import is_main_process
from .errors import ConfigError, UserError, describe_failure, one_line
from .train.config import TrainConfig

USAGE = __doc__.split("\n\n")[1]

def cmd_train(args: list[str]) -> int:
    from .train.loop import train

    if "-h" in args or "--help" in args:
        print_config_help(TrainConfig, "scorealign train CONFIG.yaml [--key value ...]\n"
                                       "       scorealign train --resume RUN_DIR [--key value ...]")
        return 0
    resume = None
    if "--resume" in args:
        i = args.index("--resume")
        if i + 1 >= len(args):
            raise ConfigError("--resume: missing run directory")
        resume = Path(args[i + 1])
        args = args[:i] + args[i + 2:]
        if any(a == "--overwrite" or a.startswith("--overwrite=") for a in args):
            raise ConfigError("--resume and --overwrite exclude each other: --resume continues "
                              "the run, --overwrite moves it aside and starts a new one")
    path = args[0] if args and not args[0].startswith("--") else None
    overrides = args[1:] if path else args
    if resume is not None:
        if not (resume / "config.yaml").is_file():
            raise ConfigError(f"--resume: '{resume}' is not a run directory (no config.yaml)")
        path = path or resume / "config.yaml"
        overrides = [*overrides, "--output_dir", str(resume)]
    elif path is None:
        raise ConfigError("usage: scorealign train CONFIG.yaml [--key value ...]")
    cfg = load_config(TrainConfig, path, overrides)
    run_dir = train(cfg, resume=resume is not None)
    if is_main_process():                                   # once under torchrun / accelerate
        print(f"run directory: {run_dir}  (final model: {run_dir / 'final'})")
    return 0


# command -> "module:function" taking the argument list; imported only when run (fast --help).
LAZY = {"demo": "recipes.real_demo:main", "bandit": "recipes.bandit:main", "sft": "recipes.sft:main",
        "reward-model": "recipes.reward_model:main", "sample": "recipes.sample_score:main_sample",
        "score": "recipes.sample_score:main_score", "eval-safety": "eval.safety:main",
        "eval-winrate": "eval.winrate:main", "synth-prefs": "recipes.synth:main",
        "plot": "eval.plots:main"}
COMMANDS = ["train", *LAZY]


def run_command(name: str, args: list[str]) -> int:
    if name == "train":
        return cmd_train(args)
    module, function = LAZY[name].split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), function)(args)


def main(argv: list[str] | None = None) -> int:
    """Run one command; the one error boundary of the package (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        code = dispatch(argv)
        sys.stdout.flush()                  # a closed pipe fails here, inside the boundary
        return code
    except UserError as e:
        return fail(2, str(e))
    except KeyboardInterrupt:
        return fail(130, "interrupted")
    except Exception as e:
        known = describe_failure(e)
        if known is not None:
            if isinstance(e, BrokenPipeError) and sys.stdout is sys.__stdout__:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no 2nd error
            return fail(*known)
        traceback.print_exc()
        return fail(1, f"internal error ({one_line(e, 200)}): this is a bug in scorealign; please "
                       "report it with the command and the traceback above")


def fail(code: int, line: str) -> int:
    print(f"scorealign: error: {line}", file=sys.stderr, flush=True)
    return code


def dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(USAGE)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"scorealign: error: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    return run_command(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
