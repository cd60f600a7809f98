"""Image build check: every module of one service imports with that image's packages.

Each image installs only its service's requirements (docker/requirements/<service>.txt); a module
importing a package the file lacks would otherwise fail only when that code path first runs in a
cluster. Run as `python check_imports.py <service>` inside the image; exits 1 naming each failure.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys

# Modules a service image leaves out on purpose, and why.
OPTIONAL = {
    # The model server image has onnxruntime and no torch: a TorchScript model needs the trainer image.
    "modelserver": {"services.modelserver.backends.torchscript"},
}


def main(service: str) -> int:
    sys.path.insert(0, os.getcwd())  # the services package sits in the working directory (/app)
    package = importlib.import_module(f"services.{service}")
    skipped = OPTIONAL.get(service, set())
    failures = []
    for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
        if module.name in skipped:
            continue
        try:
            importlib.import_module(module.name)
        except ImportError as exc:
            failures.append(f"{module.name}: {exc}")
    for line in failures:
        print(f"missing in the {service} image: {line}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
