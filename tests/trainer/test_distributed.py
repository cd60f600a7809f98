"""What the Kubernetes runner starts for several GPUs, run here on CPU: `torchrun --nproc-per-node 2`
with the gloo backend. Both ranks must end with identical weights (DistributedDataParallel)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from services.trainer.data.sklearn_digits import write_digits_snapshot

SCRIPT = """
import sys, torch, torch.distributed as dist
from tests.support.projects import prepared
from services.trainer.models import family
from services.trainer.models.families import family_defaults
from services.trainer.training.hyperparameters import parse_hyperparameters
from services.trainer.training.loop import train, distributed
dist.init_process_group("gloo")
torch.set_num_threads(1)
fam = family("mlp")
hp = parse_hyperparameters({"max_epochs": "2", "width": "32"}, family_defaults(fam))
r = train(fam, prepared(sys.argv[1]), hp)
flat = torch.cat([p.flatten() for p in r.model.state_dict().values()])
gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
dist.all_gather(gathered, flat)
assert distributed()[1] == 2
print("SAME" if all(torch.equal(g, gathered[0]) for g in gathered) else "DIFFERENT", flush=True)
dist.destroy_process_group()
"""


def test_torchrun_ranks_train_one_model(tmp_path: Path) -> None:
    uri = write_digits_snapshot(tmp_path, "small", limit=300).as_uri()
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT)
    torchrun = Path(sys.executable).with_name("torchrun")
    out = subprocess.run(
        [str(torchrun), "--nproc-per-node=2", "--standalone", str(script), uri],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=Path(__file__).resolve().parents[2],
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    # Both ranks write to one pipe: their lines may interleave, so count the verdicts.
    assert out.stdout.count("SAME") == 2 and "DIFFERENT" not in out.stdout, out.stdout
