#!/usr/bin/env bash
# Before/after on a held-out verifiable set: RLOO with builtin:math, then the pass rate of the
# base model and of the trained one (k samples per prompt, bootstrap 95% CIs, paired difference,
# per language).
#   bash examples/verifiable/before_after.sh [MODEL] [RUN_DIR] [--key value ...train overrides]
#   TASK=math bash examples/verifiable/before_after.sh    # the word problems (rloo_math.yaml)
# TASK defaults to arith (one-step sums and products, rloo_arith.yaml: ~15 min on 2 CPU cores);
# MODEL to smollm2-135m. docs/verifiable.md has the measured result.
set -euo pipefail
TASK=${TASK:-arith}
MODEL=${1:-smollm2-135m}
RUN=${2:-runs/verifiable_$TASK}
shift $(( $# < 2 ? $# : 2 ))
TOKENS=$([ "$TASK" = arith ] && echo 24 || echo 48)
python -m scorealign.cli train "examples/verifiable/rloo_$TASK.yaml" --model "$MODEL" \
    --output_dir "$RUN" "$@"
python examples/verifiable/pass_rate.py --models "$MODEL" "$RUN/final" \
    --dataset "examples/verifiable/${TASK}_eval.jsonl" --reward builtin:math --k 4 \
    --max-new-tokens "$TOKENS" --json "$RUN/pass_rate.json"
