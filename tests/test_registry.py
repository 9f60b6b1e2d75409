"""The algorithm registry is the one place an algorithm is described.

- every ``ALGORITHMS`` entry (and every ``cfg.source`` it accepts) trains for two steps on a tiny
  model, with the data its registry ``data`` kind names (a new entry is tested automatically);
- no module outside ``scorealign/algorithms`` branches on an algorithm's name;
- counts (``reward/skipped``) are summed over processes, other metrics averaged.
"""

import json
import math
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from scorealign.algorithms import ALGORITHMS
from scorealign.core.tiny import toy_prompts
from scorealign.train import TrainConfig, train
from scorealign.train.loop import reduce_metrics

PACKAGE = Path(__file__).resolve().parent.parent / "scorealign"
WORDS = ["cat", "dog", "sun", "moon"]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def dataset_for(kind: str, k: int, tmp_path: Path) -> dict:
    """Config fields giving a run the data of registry data kind ``kind``."""
    prompts = toy_prompts(8, 0)
    if kind in ("online", "mixed"):
        return dict(dataset="toy", rewards=("builtin:length",))
    if kind == "scored":
        rows = [{"prompt": p, "completion": "yes " * j + w, "score": float(j)}
                for p, w in zip(prompts, WORDS * 2) for j in range(k)]
    elif kind == "pairs":
        rows = [{"prompt": p, "chosen": "yes yes " + w, "rejected": "no " + w}
                for p, w in zip(prompts, WORDS * 2)]
    elif kind == "demonstrations":
        rows = [{"prompt": p, "completion": "yes " + w} for p, w in zip(prompts, WORDS * 2)]
    else:
        raise AssertionError(f"data kind {kind!r} has no test data: add it to dataset_for")
    return dict(dataset=write_jsonl(tmp_path / f"{kind}.jsonl", rows))


RUNS = [(name, source) for name, algo in ALGORITHMS.items()
        for source in ("online", *algo.sources)]


@pytest.mark.parametrize("name, source", RUNS, ids=[f"{n}-{s}" for n, s in RUNS])
def test_every_algorithm_trains_two_steps(name, source, tiny_model_dir, tmp_path):
    model = tiny_model_dir("llama")
    probe = TrainConfig(algo=name, source=source, k=2, micro_batch_size=4)
    cfg = TrainConfig(model=model, algo=name, source=source, k=2, steps=2, prompts_per_step=4,
                      micro_batch_size=4, max_new_tokens=6, lr=1e-3, output_dir=str(tmp_path / "run"),
                      **dataset_for(probe.data_kind, 2, tmp_path))
    run = train(cfg)
    before, after = load_file(str(Path(model) / "model.safetensors")), load_file(
        str(run / "final" / "model.safetensors"))
    assert max((after[n] - before[n]).abs().max().item() for n in before) > 1e-5
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert all(math.isfinite(v) for v in r.values() if isinstance(v, (int, float))), r
        assert "loss/policy" in r


def test_no_algorithm_name_drives_a_branch_outside_the_registry():
    pattern = re.compile(r"""algo ?(==|in) ?[("']""")
    hits = [f"{path.relative_to(PACKAGE.parent)}:{i}: {line.strip()}"
            for path in sorted(PACKAGE.rglob("*.py")) if "algorithms" not in path.parts
            for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []


class TwoProcesses:
    """An accelerator stand-in for 2 processes holding the same metrics: reduce is the identity
    for means, as it would be."""

    num_processes, device = 2, "cpu"

    def reduce(self, tensor, reduction):
        assert reduction == "mean"
        return tensor


def test_skipped_rewards_are_summed_over_processes_other_metrics_averaged():
    metrics = {"reward/mean": torch.tensor(0.5), "reward/skipped": torch.tensor(3.0)}
    assert reduce_metrics(metrics, TwoProcesses()) == {"reward/mean": 0.5, "reward/skipped": 6.0}


def test_dynamic_sampling_zeroes_equal_groups_on_every_process():
    from scorealign.train.loop import dynamic_sampling

    scores = torch.tensor([1.0, 1.0, 0.0, 1.0, 2.0, 3.0, 5.0, 5.0])        # 4 groups of k=2
    ok, valid = torch.ones(8, dtype=torch.bool), torch.ones(4, dtype=torch.bool)
    group_ok, valid_1, dropped = dynamic_sampling(scores, ok, valid, 2, world=2, rank=1)
    assert group_ok.tolist() == [False, False, True, True, True, True, False, False]
    assert valid_1.tolist() == [True, True, False, False] and dropped == 2
    skipped = torch.tensor([True] * 4 + [False] * 4)                        # a skipped reward stays out
    group_ok, valid_0, _ = dynamic_sampling(scores, skipped, torch.ones(8, dtype=torch.bool), 2, 1, 0)
    assert group_ok.tolist() == [False, False, True, True, False, False, False, False]
    assert valid_0.tolist() == [False, False, True, True, True, True, False, False]
