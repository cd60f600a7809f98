"""A project's own training code, loaded from the source its spec carries.

The spec holds the file's text (`model.code.source`, read when the spec was loaded), so any
trainer — a local worker, a pod — runs the code the project was registered with, never a file
that changed since. It runs inside the training worker process, with that process's rights: a
project's code is as trusted as whoever may create projects.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any

from services.projects.spec import ProjectSpec
from services.trainer.errors import InvalidRequest, TrainingFailed


def user_entry(project: ProjectSpec, entry: str) -> Callable[..., Any]:
    """The function `entry` of the project's code; InvalidRequest when the spec asks for another."""
    code = project.model.code
    if code is None:
        raise InvalidRequest(f"project {project.name!r} has no code of its own (model.code)")
    if code.entry != entry:
        raise InvalidRequest(f"project {project.name!r} gives `{code.entry}`, not `{entry}`")
    name = f"flywheel_project_{project.name.replace('-', '_')}"
    module = types.ModuleType(name)
    module.__file__ = code.path
    try:
        compiled = compile(code.source, f"{project.name}:{code.path}", "exec")
        sys.modules[name] = module  # dataclasses and pickling look the module up by name
        exec(compiled, module.__dict__)  # the project's own code, by design (see above)
    except SyntaxError as exc:
        raise InvalidRequest(f"{code.path}: line {exc.lineno}: {exc.msg}") from None
    except Exception as exc:  # any error in a user's module is theirs to read
        raise TrainingFailed(f"{code.path}: importing it raised {type(exc).__name__}: {exc}") from exc
    fn = getattr(module, entry, None)
    if not callable(fn):
        raise InvalidRequest(f"{code.path} defines no function `{entry}`")
    return fn
