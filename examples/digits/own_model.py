"""Your own network, Flywheel's training: `build_model(spec, hparams) -> torch.nn.Module` returning logits.

Flywheel runs everything around it — the prepared inputs (for digits, the 64 pixels of an 8×8
image in one row, each in [0, 1]), the majority-class and logistic-regression baselines, the
overfit-one-batch check, early stopping, the search when asked, the ONNX export and the gate:

    flywheel projects create -f examples/digits/own-model.yaml
    flywheel train submit --model digits-own-model --snapshot SNAPSHOT_ID --wait

`spec` is the project's spec (`spec.input.height`, `spec.labels`, …); `hparams` the hyperparameters
the spec or the job gives (`hparams.width`, `hparams.lr`, … the built-in names).
"""

from torch import nn


def build_model(spec, hparams):
    c, h, w = spec.input.channels, spec.input.height, spec.input.width
    return nn.Sequential(
        nn.Unflatten(1, (c, h, w)),
        nn.Conv2d(c, 16, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * h * w, hparams.width),
        nn.ReLU(),
        nn.Linear(hparams.width, len(spec.labels)),
    )
