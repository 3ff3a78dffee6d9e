"""Building GLEAM-X's explanation set: pairs mined from a published index, rationales from a teacher.

`job.build_explanation_set` is the job (`gleam explain-data`); one module per step: `config` (what to
build), `pairs` (which pairs: queries balanced per modality, hard negatives of the same split),
`embed` (the queries, with the index's own encoder), `teacher_prompts` (what the teacher is asked),
`answers` (what it said: accepted or a reject reason), `cache` (answers already paid for), `teachers`
(an OpenAI-compatible endpoint or a local transformers model), `rationales` (the Ray Data stage),
`manifest` (counts and contract) and `review` (export for human revision, import back).
"""
