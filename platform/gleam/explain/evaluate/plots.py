"""The confusion matrices of the MLLM and the evidence baseline, side by side, as one PNG.

Rows are the truth (match, no match); columns the verdict (match, no match) and a third column for
answers without one (the MLLM's unparsed answers, the baseline's "no verdict"), so an answer the metrics
count as wrong is visible as what it is. Drawn on matplotlib's Agg canvas: no display, no global state.
"""

from __future__ import annotations

import io

import numpy as np

from gleam.explain.metrics import VerdictCounts

ROWS = ("match", "no match")


def confusion_matrix(counts: VerdictCounts) -> np.ndarray:
    """2 x 3 counts: truth (match, no match) x verdict (match, no match, none)."""
    return np.array(
        [
            [counts.true_positive, counts.false_negative, counts.missed_matches],
            [counts.false_positive, counts.true_negative, counts.missed_non_matches],
        ],
        dtype=np.int64,
    )


def confusion_png(panels: list[tuple[str, VerdictCounts, str]], title: str) -> bytes:
    """One heat-mapped matrix per (panel title, counts, name of the no-verdict column); PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.6 * len(panels), 3.8), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, counts, missing) in zip(axes, panels, strict=True):
        matrix = confusion_matrix(counts)
        ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(1, int(matrix.max())))
        for (row, column), value in np.ndenumerate(matrix):
            dark = value > matrix.max() / 2
            ax.text(column, row, str(value), ha="center", va="center", color="white" if dark else "black")
        ax.set_xticks(range(3), ["match", "no match", missing])
        ax.set_yticks(range(2), list(ROWS))
        ax.set_xlabel("answer")
        ax.set_ylabel("truth")
        accuracy = "n/a" if counts.accuracy is None else f"{counts.accuracy:.2f}"
        ax.set_title(f"{name}: n={counts.n}, accuracy {accuracy}")
    figure.suptitle(title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
