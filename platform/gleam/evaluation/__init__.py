"""Retrieval evaluation for GLEAM-C in the University-1652 convention (docs/evaluation.md).

`evaluate` is the job and `through_index` its path through a published index; below them, modules any
caller may use: `split` (a split's gallery and queries, embedded and scored: training's validation too),
`metric_log` (MLflow names), `grid` (the retrieval grid), `distance` (distance errors in metres of the
location estimates, and their radius's coverage) with `locate` (its inputs in each mode), `result` and
`report` (what a run returns and its tables), `config`. Embedding is `gleam.model.embedding`'s, search
and metrics `gleam.retrieval`'s.
"""
