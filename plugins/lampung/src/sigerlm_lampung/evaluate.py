"""Evaluation: exact match, BLEU and chrF++ (sacrebleu, ``word_order=2``), coverage, and the
share and accuracy of each stage, per direction and per source type, next to a plain greedy
word-by-word dictionary baseline built from the same data in the same run.

- ``evaluate_split``: the system is built from ``splits/train.jsonl`` (and the dictionaries)
  and scored on another split (``valid``).
- ``cross_validate``: k folds over the human-written pairs (sources ``rajotuho`` and ``smt*``,
  train and valid together); each fold is scored by a system, and a baseline, built without
  any pair that shares a side with that fold.

Hypotheses and references are compared normalised (lower case, punctuation removed; see
``text.normalize``), for the system and the baseline alike.
"""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sigerlm_lampung.data import DictEntry, Pair
from sigerlm_lampung.text import normalize
from sigerlm_lampung.translator import TrainingData, Translator, collect, general_language_models

LANG_OF = {"abl": "lampung", "ind": "indonesian", "eng": "english"}


# ------------------------------------------------------------------------------ baseline
class WordByWord:
    """The baseline: greedy longest match (up to three words) in a word dictionary built from
    the same data (dictionary rows, word-list rows, meizano, kamus_full), taking each entry's
    most frequent translation; unknown words copied."""

    def __init__(self, data: TrainingData, max_len: int = 3):
        table: dict[str, Counter[str]] = defaultdict(Counter)
        for a, b, weight in data.dictionary:
            table[a][b] += weight
        self.table = {k: v.most_common(1)[0][0] for k, v in table.items()}
        self.max_len = max_len

    def translate(self, norm: str) -> tuple[str, int]:
        """(translation, number of source words found)."""
        words, out, found, i = norm.split(), [], 0, 0
        while i < len(words):
            for j in range(min(len(words), i + self.max_len), i, -1):
                hit = self.table.get(" ".join(words[i:j]))
                if hit is not None:
                    out.append(hit)
                    found += j - i
                    i = j
                    break
            else:
                out.append(words[i])
                i += 1
        return " ".join(out), found


# ------------------------------------------------------------------------------ metrics
def scores(hyps: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    from sacrebleu.metrics import BLEU, CHRF

    if not hyps:
        return {"n": 0}
    bleu = BLEU(effective_order=True).corpus_score(list(hyps), [list(refs)]).score
    chrf = CHRF(word_order=2).corpus_score(list(hyps), [list(refs)]).score
    exact = sum(h == r for h, r in zip(hyps, refs, strict=True)) / len(hyps)
    return {"n": len(hyps), "exact": round(100 * exact, 2), "bleu": round(bleu, 2), "chrf++": round(chrf, 2)}


@dataclass
class Item:
    direction: str
    source_type: str
    source: str
    reference: str
    hypothesis: str
    stage: str
    confidence: float
    coverage: float
    baseline: str
    baseline_coverage: float


def summarize(items: Sequence[Item]) -> dict[str, Any]:
    """Metrics of the system and the baseline per direction, per source type, per stage."""
    out: dict[str, Any] = {}
    for direction in sorted({i.direction for i in items}):
        rows = [i for i in items if i.direction == direction]
        block: dict[str, Any] = {
            "system": scores([i.hypothesis for i in rows], [i.reference for i in rows]),
            "baseline": scores([i.baseline for i in rows], [i.reference for i in rows]),
        }
        block["system"]["coverage"] = round(100 * sum(i.coverage for i in rows) / len(rows), 2)
        block["baseline"]["coverage"] = round(100 * sum(i.baseline_coverage for i in rows) / len(rows), 2)
        block["by_source"] = {
            src: {
                "system": scores([i.hypothesis for i in group], [i.reference for i in group]),
                "baseline": scores([i.baseline for i in group], [i.reference for i in group]),
            }
            for src, group in _groups(rows, "source_type").items()
        }
        block["by_stage"] = {
            stage: dict(
                scores([i.hypothesis for i in group], [i.reference for i in group]),
                share=round(100 * len(group) / len(rows), 2),
            )
            for stage, group in _groups(rows, "stage").items()
        }
        block["by_confidence"] = {
            name: dict(
                scores([i.hypothesis for i in group], [i.reference for i in group]),
                share=round(100 * len(group) / len(rows), 2),
            )
            for name, low, high in CONFIDENCE_BINS
            if (group := [i for i in rows if low <= i.confidence < high])
        }
        out[direction] = block
    return out


#: Confidence bins of the calibration table: does a higher confidence mean a better answer?
CONFIDENCE_BINS = (("<0.5", 0.0, 0.5), ("0.5-0.7", 0.5, 0.7), ("0.7-0.9", 0.7, 0.9), (">=0.9", 0.9, 1.01))


def _groups(rows: Sequence[Item], attr: str) -> dict[str, list[Item]]:
    groups: dict[str, list[Item]] = defaultdict(list)
    for row in rows:
        groups[getattr(row, attr)].append(row)
    return dict(sorted(groups.items()))


def source_type(pair: Pair) -> str:
    if pair.source.startswith("smt"):
        return "smt"
    if pair.source.startswith("synthetic_compositional"):
        return "template"
    if pair.source.startswith("dataset_1000_percakapan"):
        return "percakapan_" + ("dialogue" if pair.type == "daily_conversation" else "turn")
    if pair.source.startswith("kamus"):
        return "kamus"
    return pair.source


def score_pairs(
    translator: Translator,
    baselines: dict[str, WordByWord],
    pairs: Sequence[Pair],
    directions: Sequence[str],
    allow_model: bool = False,
) -> list[Item]:
    items: list[Item] = []
    for pair in pairs:
        for direction in directions:
            src, tgt = direction.split("-")
            source, reference = pair.side(src), pair.side(tgt)
            if not source or not reference:
                continue
            result = translator.translate(source, src, tgt, allow_model=allow_model)
            n = len(source.split())
            baseline, found = baselines[direction].translate(source) if direction in baselines else (source, 0)
            items.append(
                Item(
                    direction,
                    source_type(pair),
                    source,
                    reference,
                    normalize(result.text),
                    result.stage,
                    result.confidence,
                    1 - len(result.unknown) / n if n else 0.0,
                    baseline,
                    found / n if n else 0.0,
                )
            )
    return items


def baselines_for(
    train: Sequence[Pair], meizano: Sequence[DictEntry], words: Sequence[Pair], directions: Sequence[str]
) -> dict[str, WordByWord]:
    out = {}
    for direction in directions:
        src, tgt = direction.split("-")
        out[direction] = WordByWord(collect(train, src, tgt, meizano if "eng" not in direction else (), words))
    return out


# ------------------------------------------------------------------------------ runs
def evaluate_split(
    split: str = "valid",
    data_dir: str | Path | None = None,
    english: bool = True,
    limit: int | None = None,
    file: str | Path | None = None,
    generate: Any = None,
) -> dict[str, Any]:
    """Score a system built from ``splits/train.jsonl`` on ``splits/<split>.jsonl``; or, with
    ``file``, on that pair file with a system built from train + valid minus any pair that
    shares a side with (or contains) one of the file's pairs. ``generate`` enables the model
    fallback stage."""
    from sigerlm_lampung import data as d

    started = time.time()
    if file is not None:
        test = d.read_pairs(Path(file))
        everything = d.dedup(d.load_split("train", data_dir) + d.load_split("valid", data_dir))
        train = [p for p in everything if not _overlaps(p, test)]
        name = str(file)
    else:
        train = d.load_split("train", data_dir)
        test = d.load_split(split, data_dir)
        name = split
    test = test[:limit] if limit else test
    meizano, words = d.load_meizano(data_dir), d.load_word_pairs(data_dir)
    translator = Translator.build(
        data_dir, train=train, meizano=meizano, english="lazy" if english else False, generate=generate
    )
    has_english = english and any(p.en for p in test)
    directions = ["abl-ind", "ind-abl"] + (["abl-eng", "eng-abl"] if has_english else [])
    items = score_pairs(
        translator, baselines_for(train, meizano, words, directions), test, directions, allow_model=generate is not None
    )
    templates = [i for i in items if i.source_type == "template" and i.direction in ("abl-ind", "ind-abl")]
    return {
        "kind": "split",
        "split": name,
        "rows": len(test),
        "seconds": round(time.time() - started, 1),
        "trained_on": len(train),
        "model_fallback": generate is not None,
        "results": summarize(items),
        "templates_exact": {
            direction: scores(
                [i.hypothesis for i in templates if i.direction == direction],
                [i.reference for i in templates if i.direction == direction],
            ).get("exact")
            for direction in ("abl-ind", "ind-abl")
            if any(i.direction == direction for i in templates)
        },
    }


def cross_validate(
    folds: int = 5,
    seed: int = 0,
    data_dir: str | Path | None = None,
    directions: Sequence[str] = ("abl-ind", "ind-abl"),
) -> dict[str, Any]:
    """k-fold cross-validation over the human-written pairs (see the module docstring)."""
    from sigerlm_lampung import data as d

    started = time.time()
    everything = d.dedup(d.load_split("train", data_dir) + d.load_split("valid", data_dir))
    human = [p for p in everything if p.is_human]
    order = list(range(len(human)))
    random.Random(seed).shuffle(order)
    meizano, words = d.load_meizano(data_dir), d.load_word_pairs(data_dir)
    general = general_language_models(data_dir, english=False)
    items: list[Item] = []
    for k in range(folds):
        fold = [human[i] for i in order[k::folds]]
        train = [p for p in everything if not _overlaps(p, fold)]
        translator = Translator.build(data_dir, train=train, meizano=meizano, english=False, general_lms=general)
        items += score_pairs(translator, baselines_for(train, meizano, words, directions), fold, directions)
    return {
        "kind": "cross-validation",
        "folds": folds,
        "seed": seed,
        "rows": len(human),
        "seconds": round(time.time() - started, 1),
        "results": summarize(items),
    }


def _overlaps(pair: Pair, fold: Sequence[Pair]) -> bool:
    """True when ``pair`` equals a held-out pair on either side, or contains a held-out sentence of
    three words or more (a dialogue that quotes it, say)."""
    for held in fold:
        if pair.lo == held.lo or pair.id == held.id:
            return True
        if len(held.lo.split()) >= 3 and f" {held.lo} " in f" {pair.lo} ":
            return True
        if len(held.id.split()) >= 3 and f" {held.id} " in f" {pair.id} ":
            return True
    return False


# ------------------------------------------------------------------------------ tables
def markdown(report: dict[str, Any]) -> str:
    title = (
        f"{report['folds']}-fold cross-validation over {report['rows']} human-written pairs"
        if report["kind"] == "cross-validation"
        else f"split `{report['split']}` ({report['rows']} rows)"
    )
    lines = [
        f"#### {title}",
        "",
        "| direction | system | n | exact % | BLEU | chrF++ | coverage % |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for direction, block in report["results"].items():
        for name in ("system", "baseline"):
            s = block[name]
            lines.append(
                f"| {direction} | {name if name == 'system' else 'word-by-word baseline'} | {s['n']} | "
                f"{s['exact']} | {s['bleu']} | {s['chrf++']} | {s['coverage']} |"
            )
    lines += [
        "",
        "Per source type (system / baseline chrF++, exact %):",
        "",
        "| direction | source | n | system chrF++ | baseline chrF++ | system exact % | baseline exact % |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for direction, block in report["results"].items():
        for src, pair in block["by_source"].items():
            lines.append(
                f"| {direction} | {src} | {pair['system']['n']} | {pair['system']['chrf++']} | "
                f"{pair['baseline']['chrf++']} | {pair['system']['exact']} | {pair['baseline']['exact']} |"
            )
    lines += [
        "",
        "Per stage (share of answers, and their scores):",
        "",
        "| direction | stage | share % | n | exact % | BLEU | chrF++ |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for direction, block in report["results"].items():
        for stage, s in block["by_stage"].items():
            lines.append(
                f"| {direction} | {stage} | {s['share']} | {s['n']} | {s['exact']} | {s['bleu']} | {s['chrf++']} |"
            )
    lines += [
        "",
        "By confidence (does the confidence say how good an answer is?):",
        "",
        "| direction | confidence | share % | n | exact % | chrF++ |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for direction, block in report["results"].items():
        for name, s in block.get("by_confidence", {}).items():
            lines.append(f"| {direction} | {name} | {s['share']} | {s['n']} | {s['exact']} | {s['chrf++']} |")
    if report.get("templates_exact"):
        shown = ", ".join(f"{d} {v}%" for d, v in report["templates_exact"].items())
        lines += ["", f"Template sentences translated exactly: {shown}."]
    if any(d in report["results"] for d in ("abl-eng", "eng-abl")):
        lines += [
            "",
            (
                "The data has no Lampung-English or Indonesian-English word dictionary, so the word-by-word "
                "baseline copies English and Lampung words it cannot look up."
            ),
        ]
    return "\n".join(lines) + "\n"


def router_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"#### Router: language identification on {report['n']} held-out texts",
        "",
        (
            f"Lampung vs Indonesian vs English: **{report['accuracy_abl_ind_eng']}%**; "
            f"with the other regional languages as a fourth class: {report['accuracy_4way']}%."
        ),
        "",
        "| language | n | accuracy % |",
        "|---|---:|---:|",
    ]
    for label, row in report["per_label"].items():
        lines.append(f"| {label} | {row['n']} | {row['accuracy']} |")
    for key, title in (("human_written", "every"), ("human_written_3_words", "three words or more")):
        if key in report:
            part = report[key]
            per = ", ".join(f"{label} {row['accuracy']}% of {row['n']}" for label, row in part["per_label"].items())
            lines += [
                "",
                (
                    f"Human-written Lampung pairs (rajotuho, smt; both sides; held out of training), {title}: "
                    f"{part['accuracy_abl_ind_eng']}% ({per})."
                ),
            ]
    return "\n".join(lines) + "\n"


def evaluator_metrics(run: Any, options: Any) -> dict[str, float]:
    """The ``lampung-translation`` evaluator: ``{direction.metric: value}`` for the system and
    its baseline (``baseline.<direction>.<metric>``), and for each cross-validation fold set."""
    generate = None
    if options.model_fallback:
        from sigerlm.assemble import current_model
        from sigerlm_lampung.service import generator_generate
        from sigerlm_text.generation import GenerationConfig, Generator, make_runtime

        model = current_model(run)
        runtime = make_runtime(model, options.runtime, None, run.plugin_manager)
        config = GenerationConfig.build(max_new_tokens=64, temperature=0.0, stop=["\n"])
        generate = generator_generate(Generator(runtime, model.adapter.tokenizer), config)
    split = evaluate_split(options.split, options.data_dir, options.english, options.limit, options.file, generate)
    metrics: dict[str, float] = {"rows": split["rows"]}
    sections = [("", split["results"])]
    if options.folds:
        sections.append(("cv.", cross_validate(options.folds, options.seed, options.data_dir)["results"]))
    for prefix, results in sections:
        for direction, block in results.items():
            for who in ("system", "baseline"):
                for metric, value in block[who].items():
                    if metric != "n":
                        label = (
                            f"{prefix}{direction}.{metric}"
                            if who == "system"
                            else f"{prefix}baseline.{direction}.{metric}"
                        )
                        metrics[label] = value
    return metrics
