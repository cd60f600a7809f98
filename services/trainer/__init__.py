"""Training jobs: from a lake snapshot to a registered, exported model that beats its baselines.

Split as in Full Stack Deep Learning's text recognizer: `data/` (snapshots → arrays), `models/`
(plain nn.Modules), `training/` (loop, baselines, metrics, search, overfit check), `export.py`
(ONNX, TorchScript, int8 ONNX, .mar in Triton's layout), `registry.py` (SQL lineage and stages),
`report.py` (HTML + JSON), `job_run.py` (one job end to end), `jobs.py` + `runners/` (where a
job runs), `transport/` (REST, gRPC, Kafka adapters).
"""
