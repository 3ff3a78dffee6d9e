"""An explainer evaluation as a terminal table: the MLLM and the baseline on the same pairs, row by row.

A value where the MLLM beats the evidence baseline is marked ▲; a group with too few answers says so in
its note (its numbers are shown, never hidden); undefined values (no "match" answer for precision, no
English answer for MiniLM) are "-", not 0.
"""

from __future__ import annotations

from rich.table import Table

from gleam.explain.evaluate.result import ExplainerEvaluation
from gleam.explain.evaluate.scoring import ALL, BASELINE, MLLM

COLUMNS = (
    ("parse_rate", "parsed", "{:.0%}"),
    ("verdict_rate", "verdicts", "{:.0%}"),
    ("accuracy", "accuracy", "{:.3f}"),
    ("precision", "precision", "{:.3f}"),
    ("recall", "recall", "{:.3f}"),
    ("f1", "F1", "{:.3f}"),
    ("rouge_l", "ROUGE-L", "{:.3f}"),
    ("char_bleu", "BLEU", "{:.1f}"),
    ("minilm", "MiniLM", "{:.3f}"),
)


def evaluation_table(result: ExplainerEvaluation) -> Table:
    model = result.model.get("pinned") or result.model.get("requested")
    table = Table(
        title=(
            f"GLEAM-X on the {result.split} split of {result.explanation_set}: "
            f"{result.answered_pairs} pairs x {'/'.join(result.languages)} ({model})"
        ),
        caption=(
            "unparsed answers and answers without a verdict count as wrong; ▲ the MLLM beats the evidence "
            "baseline; ROUGE-L and BLEU over characters (en and zh alike), MiniLM cosine on English only"
        ),
        caption_style="dim",
    )
    table.add_column("modality", no_wrap=True)
    table.add_column("lang")
    table.add_column("source")
    table.add_column("n", justify="right")
    for _, header, _ in COLUMNS:
        table.add_column(header, justify="right")
    table.add_column("note")
    keys = list(dict.fromkeys(g.key for g in result.groups))
    for modality, language in keys:
        mine = result.group(MLLM, modality, language)
        theirs = result.group(BASELINE, modality, language)
        flags = result.beats.get((modality, language), {})
        for group, name in ((mine, "mllm"), (theirs, "baseline")):
            if group is None:
                continue
            values = group.metrics()
            cells = []
            for metric, _, fmt in COLUMNS:
                value = values[metric]
                cell = "-" if value is None else fmt.format(value)
                if name == "mllm" and flags.get(metric):
                    cell = f"[bold green]▲ {cell}[/]"
                cells.append(cell)
            note = ""
            if group.too_few and (name == "mllm" or mine is None):  # once per group: both have the same n
                note = f"[yellow]too few pairs to say anything (n={group.counts.n} < {result.min_pairs})[/]"
            last = name == "baseline" or theirs is None
            table.add_row(
                modality if name == "mllm" else "",
                language if name == "mllm" else "",
                name,
                str(group.counts.n),
                *cells,
                note,
                end_section=last,
                style="bold" if (modality, language) == (ALL, ALL) else None,
            )
    return table
