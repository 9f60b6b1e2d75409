#!/usr/bin/env bash
# Before/after on the held-out word problems: RLOO with builtin:math, then the pass rate of the
# base model and of the trained one (k samples per prompt, bootstrap 95% CIs, paired difference).
#   bash examples/verifiable/before_after.sh [MODEL] [RUN_DIR] [--key value ...train overrides]
# MODEL defaults to smollm2-135m; a GPU makes this minutes instead of hours (docs/verifiable.md).
set -euo pipefail
MODEL=${1:-smollm2-135m}
RUN=${2:-runs/verifiable_math}
shift $(( $# < 2 ? $# : 2 ))
python -m scorealign.cli train examples/verifiable/rloo_math.yaml --model "$MODEL" --output_dir "$RUN" "$@"
python examples/verifiable/pass_rate.py --models "$MODEL" "$RUN/final" \
    --dataset examples/verifiable/math_eval.jsonl --reward builtin:math --k 8 \
    --json "$RUN/pass_rate.json"
