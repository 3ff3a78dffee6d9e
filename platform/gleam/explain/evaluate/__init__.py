"""Evaluating GLEAM-X (`gleam evaluate-explainer`): the MLLM against the references and against the
GLEAM-C evidence answer on the same pairs of an explanation set (docs/explain.md, "Evaluating").

`job` is the job; `inference` asks the MLLM on Ray Data; `pairs` chooses the pairs; `answers` turns both
sources' output into `scoring.Answer`s; `scoring` (pure) makes the numbers, flags and worst cases;
`plots`, `artifacts`, `result` and `report` are what the run logs and prints; `config` its config.
The metrics themselves are `gleam.explain.metrics`'s.
"""
