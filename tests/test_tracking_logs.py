"""Issue 21, what a TRL user expects to see: plain progress lines when stdout is not a terminal
(while the run goes), checkpoints by default and a resume that says where it continues, trackers
through accelerate (``report_to``) read back from their local stores, the completions table, and
TRL's argument names mapped or refused; "did you mean" in YAML and on the command line."""

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from faults import one_error, run_cli

from scorealign.core.config import load_config
from scorealign.errors import ConfigError
from scorealign.recipes.sft import SFTConfig
from scorealign.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(dataset="toy", prompts_per_step=2, k=2, micro_batch_size=4, max_new_tokens=4,
             lr=1e-3, reward_sandbox=False)


def write_yaml(path: Path, **values) -> Path:
    path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items()))
    return path


def cli_process(*argv, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "scorealign.cli", *map(str, argv)], env=env,
                            text=True, **popen)


# ------------------------------------------------------------------------ logs for machines

def test_plain_lines_arrive_while_the_run_goes(tiny_model_dir, tmp_path):
    """stdout is a pipe: a plain 'step N/M  reward m ± s  kl  lr  s/step  eta' line every
    log_every steps, each read while the process is still running."""
    cfg = write_yaml(tmp_path / "c.yaml", model=tiny_model_dir("llama"), steps=30, log_every=5,
                     rewards=["builtin:length"], **SMALL)
    proc = cli_process("train", cfg, "--output_dir", tmp_path / "run", stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL)
    seen = []
    try:
        for line in proc.stdout:
            if line.startswith("step "):
                seen.append((line.strip(), proc.poll() is None))
            if len(seen) == 3:
                break
    finally:
        rest = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0
    assert [s.split()[1] for s, _ in seen] == ["1/30", "5/30", "10/30"]
    assert all(running for _, running in seen), seen                   # read before the end
    assert re.fullmatch(r"step 5/30  reward \S+ ± \S+  kl \S+  lr 0\.001  \S+ s/step  "
                        r"eta \d+:\d\d:\d\d", seen[1][0]), seen[1][0]
    lines = [x for x in rest.splitlines() if x.startswith("step ")]
    assert [x.split()[1] for x in lines] == [f"{n}/30" for n in (15, 20, 25, 30)]
    assert rest.count("run directory:") == 1


def test_interrupted_default_run_resumes(tiny_model_dir, tmp_path):
    """Default checkpointing (save_every 25 of 50 steps): SIGINT once step 25's checkpoint is
    written; --resume says where it continues and finishes the run, one metrics line per step."""
    cfg = write_yaml(tmp_path / "c.yaml", model=tiny_model_dir("llama"),
                     rewards=["builtin:length"], **SMALL)
    run = tmp_path / "run"
    proc = cli_process("train", cfg, "--output_dir", run, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
    manifest = run / "checkpoints" / "step-000025" / "manifest.json"
    deadline = time.time() + 300
    while not manifest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130 and "scorealign: error: interrupted" in err, err
    assert not (run / "final").exists()
    done = subprocess.run([sys.executable, "-m", "scorealign.cli", "train", "--resume", run],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    ckpt = run / "checkpoints" / "step-000025"
    assert f"resuming {run} at step 25 of 50 from checkpoint {ckpt}" in done.stdout
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 51)) and (run / "final" / "model.safetensors").is_file()


def test_save_total_limit_keeps_the_newest(tiny_model_dir, tmp_path):
    run = train(TrainConfig(model=tiny_model_dir("llama"), steps=4, save_every=1,
                            save_total_limit=2, output_dir=str(tmp_path / "run"),
                            rewards=("builtin:length",), **SMALL))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000003",
                                                                        "step-000004"]


# ------------------------------------------------------------------- metrics and completions

def test_metrics_mean_something_and_completions_are_logged(tiny_model_dir, tmp_path):
    """RLOO on two summed rewards: the advantage-weighted objective and spread (not just the
    constant-0 surrogate), each source's mean, and a completions table every 2 steps."""
    run = train(TrainConfig(model=tiny_model_dir("llama"), steps=4, log_completions_every=2,
                            rewards=("builtin:length", "builtin:count:yes"),
                            output_dir=str(tmp_path / "run"), **SMALL))
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["pg/advantage_abs"] > 0 and r["pg/objective"] != 0 for r in rows)
    assert all(r["rewards/length/mean"] == pytest.approx(r["reward/mean"], abs=1e-5)
               for r in rows)                                   # 'yes' never sampled: 0
    table = [json.loads(x) for x in (run / "completions.jsonl").read_text().splitlines()]
    assert [t["step"] for t in table] == [2] * 4 + [4] * 4
    assert set(table[0]) == {"step", "prompt", "completion", "reward/length", "reward/count:yes",
                             "reward", "advantage"}
    assert table[0]["reward"] == table[0]["reward/length"] + table[0]["reward/count:yes"]


def test_dpo_logs_trl_reward_names(tiny_model_dir, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"cat {i}", "chosen": "yes", "rejected": "no"})
                             + "\n" for i in range(8)))
    run = train(TrainConfig(model=tiny_model_dir("llama"), algo="dpo", steps=2, beta=0.1,
                            output_dir=str(tmp_path / "run"), **{**SMALL, "dataset": str(pairs)}))
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["rewards/margins"] == pytest.approx(row["rewards/chosen"] - row["rewards/rejected"],
                                                   abs=1e-5)
    assert row["rewards/margins"] == pytest.approx(0.1 * row["margin"], abs=1e-5)
    assert 0 <= row["rewards/accuracies"] <= 1 and not (run / "completions.jsonl").exists()


# ------------------------------------------------------------------------------ trackers

def wandb_records(run_dir: Path):
    """The protobuf records of the offline run's .wandb file (a LevelDB-format log)."""
    from wandb.proto import wandb_internal_pb2

    data = next(run_dir.glob("wandb/offline-run-*/run-*.wandb")).read_bytes()
    pos, buf = 7, b""                                   # after the ':W&B' file header
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if left < 7 or kind == 0:
            pos += left
            continue
        buf, pos = buf + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):                              # a full record, or its last chunk
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            yield record
            buf = b""


def read_wandb(run_dir: Path) -> tuple[dict, list, dict]:
    config, history = {}, []
    for record in wandb_records(run_dir):
        kind = record.WhichOneof("record_type")
        if kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                            for i in record.history.item})
    table = json.loads(next(run_dir.glob("wandb/offline-run-*/files/media/table/"
                                          "completions_*.table.json")).read_text())
    return config, [h for h in history if "reward/mean" in h], table


def read_mlflow(run_dir: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
    run = client.search_runs([client.get_experiment_by_name(run_dir.name).experiment_id])[0]
    history = [{"_step": m.step, "reward/mean": m.value}
               for m in client.get_metric_history(run.info.run_id, "reward/mean")]
    artifact = client.download_artifacts(run.info.run_id, "completions/step-000002.json",
                                         str(run_dir / "downloaded"))
    table = json.loads(Path(artifact).read_text())
    return run.data.params, history, table


def read_trackio(run_dir: Path):
    from trackio.utils import TRACKIO_DIR

    db = sqlite3.connect(Path(TRACKIO_DIR) / f"{run_dir.name}.db")
    config = json.loads(db.execute("select config from configs").fetchone()[0])
    rows = [(step, json.loads(m)) for step, m in db.execute("select step, metrics from metrics")]
    history = [{"_step": s, **m} for s, m in rows if "reward/mean" in m]
    table = next(m["completions"] for _, m in rows if "completions" in m)
    return config, history, {"data": table["_value"]}


def read_tensorboard(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    history = [{"_step": e.step, "reward/mean": e.value} for e in events.Scalars("reward/mean")]
    text = events.Tensors("completions/text_summary")[0].tensor_proto.string_val[0].decode()
    hparams = next(run_dir.glob("tensorboard/*/hparams.yml")).read_text()
    return {"lr": float(re.search(r"lr: (\S+)", hparams).group(1))}, history, {"text": text}


READERS = {"tensorboard": ("tensorboard", read_tensorboard), "wandb": ("wandb", read_wandb),
           "mlflow": ("mlflow", read_mlflow), "trackio": ("trackio", read_trackio)}


@pytest.mark.parametrize("tracker", list(READERS))
def test_tracker_logs_metrics_config_and_completions(tracker, tiny_model_dir, tmp_path,
                                                     monkeypatch):
    module, read = READERS[tracker]
    if tracker == "trackio" and module not in sys.modules:
        monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))   # read when imported
    pytest.importorskip(module)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_dir = tmp_path / f"run-{tracker}-{os.getpid()}-{time.time_ns()}"
    run = train(TrainConfig(model=tiny_model_dir("llama"), steps=2, log_completions_every=2,
                            report_to=(tracker,), output_dir=str(run_dir),
                            rewards=("builtin:length",), **SMALL))
    config, history, table = read(run)
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert float(config["lr"]) == 1e-3                             # the resolved config
    assert [(h["_step"], h["reward/mean"]) for h in history] == [
        (m["step"], pytest.approx(m["reward/mean"], abs=1e-5)) for m in metrics]
    completions = [json.loads(x) for x in (run / "completions.jsonl").read_text().splitlines()]
    if "text" in table:                                            # TensorBoard: markdown
        assert table["text"].count("\n") == len(completions) + 1
        assert completions[0]["completion"].replace("|", "\\|") in table["text"]
    else:
        data = table["data"]
        first = data[0] if isinstance(data[0], list) else list(data[0].values())
        assert len(data) == len(completions) and completions[0]["completion"] in first


def test_missing_tracker_is_one_line(capsys, monkeypatch, tmp_path, tiny_model_dir):
    for name in ("wandb", "mlflow", "trackio"):
        monkeypatch.setitem(sys.modules, name, None)             # import fails, as if absent
        cfg = write_yaml(tmp_path / "c.yaml", model=tiny_model_dir("llama"), **SMALL)
        out = tmp_path / f"out-{name}"
        one_error(*run_cli(capsys, "train", cfg, "--report_to", name, "--output_dir",
                           out)[::2], f"report_to: {name} is not installed",
                  f"pip install 'scorealign[{name}]'")
        assert not out.exists()


def test_deprecated_tensorboard_key_still_works():
    cfg = load_config(TrainConfig, None, ["--tensorboard", "true"])
    assert cfg.trackers == ("tensorboard",)
    assert load_config(TrainConfig, None, ["--report_to", "none"]).trackers == ()


# --------------------------------------------------------------------------- TRL's names

@pytest.mark.parametrize("flag, value, key, expected", [
    ("learning_rate", "1e-3", "lr", 1e-3), ("num_generations", "2", "k", 2),
    ("max_completion_length", "7", "max_new_tokens", 7), ("logging_steps", "3", "log_every", 3),
    ("save_steps", "5", "save_every", 5), ("max_steps", "9", "steps", 9),
    ("num_iterations", "2", "num_epochs", 2), ("max_prompt_length", "64", "max_prompt_tokens", 64),
])
def test_trl_names_map_on_the_command_line_and_in_yaml(capsys, tmp_path, flag, value, key,
                                                       expected):
    cfg = load_config(TrainConfig, None, [f"--{flag}", value])
    assert getattr(cfg, key) == expected
    assert f"--{flag} is TRL's name for '{key}'" in capsys.readouterr().out
    path = tmp_path / "c.yaml"
    path.write_text(f"{flag}: {value}\n")
    assert getattr(load_config(TrainConfig, path), key) == expected
    assert f"{path}: {flag} is TRL's name for '{key}'" in capsys.readouterr().out


@pytest.mark.parametrize("flag, says", [
    ("num_train_epochs", "set steps"), ("per_device_train_batch_size", "prompts_per_step"),
    ("gradient_accumulation_steps", "micro_batch_size"), ("bf16", "precision: bf16"),
])
def test_trl_names_without_an_equal_are_refused_naming_the_key(flag, says):
    with pytest.raises(ConfigError, match=f"--{flag}: TRL's {flag} .*{says}"):
        load_config(TrainConfig, None, [f"--{flag}", "1"])


def test_num_epochs_means_dataset_passes_in_sft_only(capsys):
    with pytest.raises(ConfigError, match="num_iterations.*scorealign sft --num_epochs"):
        load_config(TrainConfig, None, ["--num_train_epochs", "3"])
    cfg = load_config(SFTConfig, None, ["--num_train_epochs", "3", "--dataset", "d.jsonl"])
    assert cfg.num_epochs == 3.0 and "passes over the dataset" in capsys.readouterr().out


def test_trl_name_and_its_key_together_are_refused():
    with pytest.raises(ConfigError, match="--learning_rate: TRL's name for 'lr', which is also set"):
        load_config(TrainConfig, None, ["--lr", "1e-4", "--learning_rate", "1e-3"])


@pytest.mark.parametrize("typo, suggestion", [
    ("lerning_rate", "did you mean 'lr'? TRL's name for it is 'learning_rate'"),
    ("max_new_token", "did you mean 'max_new_tokens'?"),
    ("num_generation", "did you mean 'k'? TRL's name for it is 'num_generations'"),
])
def test_did_you_mean_in_yaml_and_on_the_command_line(capsys, tmp_path, tiny_model_dir, typo,
                                                      suggestion):
    path = tmp_path / "c.yaml"
    path.write_text(f"{typo}: 1\n")
    line = one_error(*run_cli(capsys, "train", path)[::2], str(path), f"unknown key '{typo}'")
    assert suggestion in line
    line = one_error(*run_cli(capsys, "train", write_yaml(tmp_path / "ok.yaml"), f"--{typo}",
                              "1")[::2], f"--{typo}: unknown key '{typo}'")
    assert suggestion in line


def test_help_lists_trl_names_and_explains_num_epochs(capsys):
    code, out, _ = run_cli(capsys, "train", "--help")
    assert code == 0
    assert "--learning_rate" in out and "-> lr" in out and "TRL's num_iterations" in out


def test_docs_list_every_trl_name():
    from scorealign.train import trl_names

    doc = (ROOT / "docs" / "trl_names.md").read_text()
    for name, (target, _) in {**trl_names.TRAIN, **trl_names.SFT}.items():
        assert f"| `{name}` | " + (f"`{target}` (mapped)" if target else "refused") in doc, name


def test_progress_log_bar_and_plain_lines(tmp_path, capsys):
    """The bar on a terminal (no plain lines), plain lines every log_every steps otherwise; both
    write metrics.jsonl and the completions file."""
    from types import SimpleNamespace

    from scorealign.core.metrics import ProgressLog

    cfg = SimpleNamespace(steps=6, log_every=3, algo="rloo")
    stats = {"reward/mean": 1.0, "reward/std": 0.5, "kl": 0.1, "loss/policy": 0.0}
    for terminal in (True, False):
        run = tmp_path / f"t{terminal}"
        log = ProgressLog(run, cfg, 0, True, terminal=terminal)
        for step in range(1, 7):
            log.step(step, stats, 0.5, 1e-3, 8)
        log.completions(6, [{"prompt": "p", "completion": "c", "reward": 1.0, "advantage": 0.2}])
        log.close()
        out = capsys.readouterr().out
        plain = [x.split()[1] for x in out.splitlines() if x.startswith("step ")]
        assert plain == ([] if terminal else ["1/6", "3/6", "6/6"])
        assert len((run / "metrics.jsonl").read_text().splitlines()) == 6
        assert json.loads((run / "completions.jsonl").read_text())["step"] == 6
