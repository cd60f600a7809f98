"""Your own training loop: `train(context)` writes `model.onnx` or `model.pt` (TorchScript) and may return numbers.

Flywheel prepares the snapshot as the project's model inputs, calls this, then checks the model it
wrote against the project, measures it on the test split with the same baselines a training job
runs, and registers it; the same promotion gate judges it:

    flywheel projects create -f examples/digits/own-training.yaml
    flywheel train submit --model digits-own-training --snapshot SNAPSHOT_ID --wait

`context.data.train.x` / `.y` are float32 model inputs (here 64 pixels a row) and label indices;
`context.data.validation` likewise (leave `test` to Flywheel); `context.hyperparameters` holds the
strings the spec or the job gave; `context.output_dir` is where the model goes.
"""

import torch
from torch import nn


def train(context):
    torch.manual_seed(context.seed)
    hp = context.hyperparameters
    x = torch.from_numpy(context.data.train.x.reshape(len(context.data.train.x), -1))
    y = torch.from_numpy(context.data.train.y)
    model = nn.Sequential(
        nn.Linear(x.shape[1], int(hp.get("width", 64))),
        nn.ReLU(),
        nn.Linear(int(hp.get("width", 64)), len(context.labels)),
    )
    opt = torch.optim.Adam(model.parameters(), lr=float(hp.get("lr", 0.01)))
    for _ in range(int(hp.get("max_epochs", 150))):  # full-batch steps: a few hundred rows
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    val = context.data.validation
    with torch.no_grad():
        predicted = model(torch.from_numpy(val.x.reshape(len(val.x), -1))).argmax(dim=1).numpy()
    example = torch.zeros(2, *context.input_shape)
    torch.jit.trace(nn.Sequential(nn.Flatten(), model), example).save(str(context.output_dir / "model.pt"))
    return {"validation_accuracy": float((predicted == val.y).mean()) if len(val.y) else 0.0}
