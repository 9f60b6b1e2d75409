"""`scorealign eval-safety`: harmful rate by language x global/local x harm category (Aya
red-teaming, arXiv 2406.18682), with Wilson 95% intervals, and over-refusal on benign prompts.

Step 1  rows: a completions file (prompt, completion, language, global_or_local, harm_category,
        optional benign and human label), or a model sampled once per red-teaming prompt.
Step 2  the judge gives each red-teaming completion a verdict (harmful / safe / refusal / unparsed).
        A blank completion (the model said nothing) is not sent to the judge: its verdict is
        `blank`, it stays in n as not harmful and not a refusal, and is counted in `blank`.
Step 3  the refusal detector marks refusals on benign rows (a blank reply is not a refusal;
        counted in `blank` too).
Step 4  rates per cell: harmful = verdict "harmful" over judged rows (refusal counts as not
        harmful; unparsed rows are left out of n and counted in `unparsed`); a row with several
        categories counts once in each. Both global and local appear for every language, with
        n = 0 where no row falls.
Step 5  report.json, report.md and harmful_rate.png in output_dir, each written atomically. A
        stand-in judge (a py:/file: function named ``placeholder...`` or ``stand_in...``, such as
        the example's ``placeholder_judge``) is named in the report's first line, and refused
        with ``model`` (real completions): it only reads the shipped example's placeholders.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter, defaultdict
from pathlib import Path

from ..core.config import SamplingBlock, SandboxBlock, config_from_argv, to_dict
from ..core.io import atomic_write_json, atomic_write_text
from ..data.formats import completion_text, is_blank, load_prompts, load_sft
from ..data.readers import Row, row_location
from ..errors import ConfigError, DataError
from ..rewards.language import check_language_field, normalize_language
from ..rewards.sandbox import sandbox_limits
from .judge import (
    VERDICTS,
    check_judge_spec,
    judge_agreement,
    judge_from_spec,
    parse_human_label,
    refusal_from_spec,
)
from .redteam import check_redteam_row, load_redteam
from .reports import (
    fmt_rate,
    markdown_table,
    rate_cell,
    require_matplotlib,
    save_figure,
)


@dataclasses.dataclass(frozen=True)
class SafetyConfig(SandboxBlock, SamplingBlock):
    """`scorealign eval-safety`: harmful rate by language x global/local x category, over-refusal."""

    completions: str = ""  # rows prompt, completion, language, global_or_local, harm_category[, benign, is_harmful]; or model + prompts
    model: str = ""  # causal LM to sample one completion per prompt from (when `completions` is empty)
    prompts: str = ""  # red-teaming prompts for `model`, Aya format: a dir of JSONL, a file or a hub id
    prompt_splits: tuple[str, ...] = ("train",)  # splits of `prompts` to read (the hub release: arabic, english, ...)
    benign_prompts: str = ""  # with `model`: benign prompt + language rows, for the over-refusal rate
    languages: tuple[str, ...] | None = None  # keep only these languages (codes or names)
    max_prompts_per_language: int = 0  # with `model`: first N red-teaming prompts of each language (0: all)
    batch_size: int = 8  # prompts per generation call and rows per judge call
    judge: str = ""  # model:PATH | llm:PATH | py:mod:fn | file:path.py:fn (required)
    judge_labels: tuple[str, ...] | None = None  # model: judges: the verdict of each class index, e.g. safe,harmful
    judge_template: str | None = None  # llm: judges: text file with {prompt}, {completion}, {language} (default: built in)
    refusal: str = "keywords"  # over-refusal detector: keywords | py:mod:fn | file:path.py:fn
    human_label_field: str = "is_harmful"  # column of human harmful labels; judge agreement is reported when present
    output_dir: str = "safety_eval"  # report.json, report.md, harmful_rate.png (+ completions.jsonl when generated)
    plot: bool = True  # draw harmful_rate.png (needs matplotlib)

    def __post_init__(self):
        super().__post_init__()
        if not self.judge:
            raise ConfigError("judge: required (model:PATH, llm:PATH, py:mod:fn or file:path.py:fn)")
        check_judge_spec(self.judge)
        if self.model and stand_in_judge(self.judge):
            raise ConfigError(f"judge: {self.judge!r} is a stand-in that only reads the "
                              "placeholders of the shipped example completions; to judge a "
                              "model's completions give judge: llm:PATH or model:PATH")
        if bool(self.completions) == bool(self.model):
            raise ConfigError("give either completions (a file of completions) or model + prompts")
        if self.model and not self.prompts:
            raise ConfigError("prompts: required with model (red-teaming prompts to sample from)")


SCOPES = ("global", "local")
STAND_IN_MARKERS = ("placeholder", "stand_in")


def stand_in_judge(spec: str) -> bool:
    """A py:/file: judge spec (or a judge's bare function name) whose function name marks it as
    a stand-in (``placeholder_judge``)."""
    kind, colon, _ = spec.partition(":")
    name = spec.rsplit(":", 1)[-1].lower()
    return (not colon or kind in ("py", "file")) and any(name.startswith(m) for m in STAND_IN_MARKERS)


# ------------------------------------------------------------------------------ step 1: rows


def _is_benign(row: Row) -> bool:
    value = row.get("benign")
    flag = parse_human_label(value) if value is not None else False
    if flag is None:
        raise DataError(f"{row_location(row)}: field 'benign' must be true or false, got {value!r}")
    return flag


def load_completion_rows(path: str) -> list[Row]:
    """Validated rows with ``text`` (the completion's text), ``benign`` and normalised fields."""
    out = []
    for row in load_sft(path, blank_ok=True):
        benign = _is_benign(row)
        row = check_language_field([row])[0] if benign else check_redteam_row(row)
        text = "" if is_blank(row["completion"]) else completion_text(row)
        out.append({**row, "benign": benign, "text": text})
    return out


def generate_rows(cfg: SafetyConfig) -> list[Row]:
    """Red-teaming (and benign) prompts sampled once each from ``cfg.model``."""
    from ..engine.generate import generate_completions

    rows = load_redteam(cfg.prompts, cfg.prompt_splits, cfg.languages)
    if cfg.max_prompts_per_language:
        kept, seen = [], Counter()
        for r in rows:
            seen[r["language"]] += 1
            if seen[r["language"]] <= cfg.max_prompts_per_language:
                kept.append(r)
        rows = kept
    rows = [{**r, "benign": False} for r in rows]
    if cfg.benign_prompts:
        rows += [{**r, "benign": True} for r in check_language_field(load_prompts(cfg.benign_prompts))]
    out, _ = generate_completions(cfg.model, rows, cfg, keep_blank=True)    # blanks are counted
    return [{**r, "text": r["completion"]} for r in out]


# ------------------------------------------------------------------------------ step 4: rates


def _tally(keyed: list[tuple[list[tuple], bool | None, bool]]) -> dict[tuple, dict]:
    """[(cell keys of a row, outcome or None = unparsed, blank)] ->
    {key: {n, count, rate, ci95, unparsed, blank}}; blank rows are in n (outcome False)."""
    flags: dict[tuple, list[bool]] = defaultdict(list)
    unparsed: Counter = Counter()
    blank: Counter = Counter()
    for keys, outcome, is_blank_row in keyed:
        for key in keys:
            flags[key]                                           # the cell exists even if all unparsed
            blank[key] += is_blank_row
            if outcome is None:
                unparsed[key] += 1
            else:
                flags[key].append(outcome)
    return {key: {**rate_cell(f), "unparsed": unparsed[key], "blank": blank[key]}
            for key, f in flags.items()}


def empty_cell() -> dict:
    return {**rate_cell([]), "unparsed": 0, "blank": 0}


def harmful_rates(rows: list[Row], verdicts: list[str]) -> dict:
    """Harmful rate overall, by language, language x scope (global and local always, n = 0 where
    no row falls), category, and all three."""
    keyed = []
    for row, verdict in zip(rows, verdicts):
        lang, scope = row["language"], row["global_or_local"]
        keys = [("all",), ("language", lang), ("scope", lang, scope)]
        for cat in row["harm_category"]:
            keys += [("category", cat), ("cell", lang, scope, cat)]
        keyed.append((keys, None if verdict == "unparsed" else verdict == "harmful",
                      verdict == "blank"))
    cells = _tally(keyed)
    for lang in {r["language"] for r in rows}:
        for scope in SCOPES:
            cells.setdefault(("scope", lang, scope), empty_cell())
    out: dict = {"all": cells.get(("all",), empty_cell()), "by_language": {},
                 "by_language_scope": {}, "by_category": {}, "by_language_scope_category": []}
    for key in sorted(cells):
        kind, cell = key[0], cells[key]
        if kind == "language":
            out["by_language"][key[1]] = cell
        elif kind == "scope":
            out["by_language_scope"].setdefault(key[1], {})[key[2]] = cell
        elif kind == "category":
            out["by_category"][key[1]] = cell
        elif kind == "cell":
            out["by_language_scope_category"].append(
                {"language": key[1], "global_or_local": key[2], "harm_category": key[3], **cell})
    return out


def over_refusal_rates(rows: list[Row], refusals: list[bool]) -> dict:
    cells = _tally([([("all",), ("language", r["language"])], f, not r["text"].strip())
                    for r, f in zip(rows, refusals)])
    return {"all": cells.get(("all",), empty_cell()),
            "by_language": {k[1]: c for k, c in sorted(cells.items()) if k[0] == "language"}}


# ------------------------------------------------------------------------------ step 5: outputs


def report_markdown(report: dict) -> str:
    """The report's tables as markdown; every cell with its n."""
    h = report["harmful_rate"]
    head = ["language", "global/local", "n", "harmful", "rate", "95% CI", "unparsed", "blank"]
    cols = lambda c: [c["n"], c["count"], *fmt_rate(c), c["unparsed"], c["blank"]]  # noqa: E731
    rows = [["all", "all", *cols(h["all"])]]
    for lang, by_scope in h["by_language_scope"].items():
        for scope, c in [("all", h["by_language"][lang]), *by_scope.items()]:
            rows.append([lang, scope, *cols(c)])
    judge = f"judge: `{report['judge']}`"
    if report.get("judge_is_stand_in"):
        judge = (f"STAND-IN JUDGE `{report['judge']}`: not a safety judgement, the rates below "
                 "only exercise the report (use judge: llm:PATH or model:PATH)")
    text = (f"# Safety evaluation ({judge})\n\n{report['n_redteam']} red-teaming rows, "
            f"{report['n_benign']} benign rows. n = rows in the cell (blank completions included, "
            f"as neither harmful nor refusals; unparsed verdicts left out)\n\n"
            f"## Harmful rate by language x global/local\n\n" + markdown_table(head, rows))
    rows = [[c["language"], c["global_or_local"], c["harm_category"], *cols(c)]
            for c in h["by_language_scope_category"]]
    text += ("\n## Harmful rate by language x global/local x category\n\n"
             + markdown_table(head[:2] + ["category"] + head[2:], rows))
    rows = [[cat, *cols(c)] for cat, c in h["by_category"].items()]
    text += "\n## Harmful rate by category\n\n" + markdown_table(["category"] + head[2:], rows)
    o = report["over_refusal"]
    rows = [[lang, c["n"], c["count"], *fmt_rate(c), c["blank"]] for lang, c in
            [("all", o["all"]), *o["by_language"].items()]]
    text += ("\n## Over-refusal on benign prompts\n\nrefusal detector: `" + report["refusal"] + "`\n\n"
             + markdown_table(["language", "n", "refusals", "rate", "95% CI", "blank"], rows))
    if report["judge_agreement"]:
        rows = [[lang, c["n"], c["agree"], "-" if c["agreement"] is None else f"{100 * c['agreement']:.1f}%",
                 c["unparsed"]] for lang, c in report["judge_agreement"].items()]
        text += ("\n## Judge agreement with human labels\n\n"
                 + markdown_table(["language", "n", "agree", "agreement", "unparsed"], rows))
    return text


def plot_harmful_rates(report: dict, path: Path) -> None:
    """Grouped bars: harmful rate per language, one bar per global/local, Wilson 95% error bars."""
    plt = require_matplotlib(", or pass --plot false")
    by = report["harmful_rate"]["by_language_scope"]
    langs = list(by)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(langs) + 2), 3.5))
    for j, scope in enumerate(("global", "local")):
        xs, ys, err = [], [], [[], []]
        for i, lang in enumerate(langs):
            c = by[lang].get(scope)
            if c and c["rate"] is not None:
                xs.append(i + (j - 0.5) * 0.38)
                ys.append(c["rate"])
                err[0].append(c["rate"] - c["ci95"][0])
                err[1].append(c["ci95"][1] - c["rate"])
        bars = ax.bar(xs, ys, width=0.36, yerr=err, capsize=3, label=scope)
        ax.bar_label(bars, [f"n={by[lang][scope]['n']}" for lang in langs
                            if by[lang].get(scope) and by[lang][scope]["rate"] is not None],
                     fontsize=7, padding=2)
        for i, lang in enumerate(langs):                         # empty cells still named
            if by[lang].get(scope, {}).get("rate") is None:
                ax.text(i + (j - 0.5) * 0.38, 0.01, "n=0", ha="center", fontsize=7)
    ax.set_xticks(range(len(langs)), langs)
    ax.set_xlim(-0.6, len(langs) - 0.4)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("harmful rate (95% Wilson CI)")
    stand_in = "STAND-IN " if report.get("judge_is_stand_in") else ""
    ax.set_title(f"{stand_in}judge: {report['judge']}", fontsize=8)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    save_figure(fig, path)


def judge_rows(judge, rows: list[Row], batch_size: int) -> list[str]:
    """One verdict per row: the judge's for non-blank completions (``batch_size`` rows per
    call), ``blank`` for blank ones (never sent to the judge)."""
    said = [r for r in rows if r["text"].strip()]
    got: list[str] = []
    for s in range(0, len(said), batch_size):
        chunk = said[s:s + batch_size]
        out = judge([r["prompt"] for r in chunk], [r["text"] for r in chunk],
                    language=[r["language"] for r in chunk])
        if len(out) != len(chunk) or any(v not in VERDICTS for v in out):
            raise ConfigError(f"judge {judge.name!r} must return one of {VERDICTS} per row, "
                              f"got {list(out)[:4]!r}...")
        got += out
    verdicts = iter(got)
    return [next(verdicts) if r["text"].strip() else "blank" for r in rows]


def run_eval_safety(cfg: SafetyConfig, judge=None, refusal=None) -> dict:
    """Steps 1-5 (module docstring); ``judge``/``refusal`` objects override the specs."""
    if cfg.plot:
        require_matplotlib(", or pass --plot false")
    t0, out_dir = time.perf_counter(), Path(cfg.output_dir)
    rows = load_completion_rows(cfg.completions) if cfg.completions else generate_rows(cfg)
    if cfg.languages:
        wanted = {normalize_language(x) for x in cfg.languages}
        rows = [r for r in rows if r["language"] in wanted]
    if not rows:
        raise DataError("no rows to evaluate (check `languages`)")
    template = Path(cfg.judge_template).read_text() if cfg.judge_template else None
    judge = judge or judge_from_spec(cfg.judge, cfg.judge_labels, template, cfg.trust_remote_code,
                                     cfg.batch_size, sandbox_limits(cfg))
    refusal = refusal or refusal_from_spec(cfg.refusal, sandbox_limits(cfg))
    harmful = [r for r in rows if not r["benign"]]
    benign = [r for r in rows if r["benign"]]
    verdicts = judge_rows(judge, harmful, cfg.batch_size)                   # step 2
    refusals = refusal([r["prompt"] for r in benign], [r["text"] for r in benign],   # step 3
                       language=[r["language"] for r in benign]) if benign else []
    report = {"judge": judge.name, "judge_is_stand_in": stand_in_judge(judge.name)
              or stand_in_judge(cfg.judge),
              "refusal": getattr(refusal, "name", cfg.refusal),
              "n_redteam": len(harmful), "n_benign": len(benign),
              "verdicts": dict(Counter(verdicts)),
              "harmful_rate": harmful_rates(harmful, verdicts),                  # step 4
              "over_refusal": over_refusal_rates(benign, refusals),
              "judge_agreement": judge_agreement(
                  verdicts, [r.get(cfg.human_label_field) for r in harmful],
                  [r["language"] for r in harmful]),
              "config": to_dict(cfg)}
    atomic_write_json(out_dir / "report.json", report)                              # step 5
    atomic_write_text(out_dir / "report.md", report_markdown(report))
    if cfg.plot:
        plot_harmful_rates(report, out_dir / "harmful_rate.png")
    if not cfg.completions:
        from ..data.formats import write_jsonl

        write_jsonl(out_dir / "completions.jsonl",
                    [{k: v for k, v in r.items() if k != "text"} for r in rows])
    h = report["harmful_rate"]["all"]
    rate = "-" if h["rate"] is None else f"{100 * h['rate']:.1f}%"
    stand_in = " (a STAND-IN judge: not a safety judgement)" if report["judge_is_stand_in"] else ""
    print(f"judged {len(harmful)} red-teaming rows with {judge.name}{stand_in} in "
          f"{time.perf_counter() - t0:.1f} s: harmful rate {rate} of n={h['n']} "
          f"({report['verdicts'].get('unparsed', 0)} unparsed, {h['blank']} blank); "
          f"report in {out_dir}/report.md")
    return report


def main(argv: list[str]) -> int:
    """``scorealign eval-safety CONFIG.yaml [--key value ...]``."""
    cfg = config_from_argv(SafetyConfig, argv, "scorealign eval-safety CONFIG.yaml [--key value ...]")
    if cfg is not None:
        run_eval_safety(cfg)
    return 0
