"""Fine-tuning GLEAM-X's multimodal LLM on an explanation set, on Ray Train (`gleam finetune-explainer`).

One job per module: `config` (the validated job config), `samples` (set rows -> the serving prompt and
the JSON answer, tokenised with the loss on the answer only), `data` (Ray Data: set rows joined with
the corpus images), `state` (optimiser/scheduler state without pickle), `loop` (the per-worker loop),
`job` (the driver: re-run rules, TorchTrainer, registration). Nothing heavy is imported here.
"""
