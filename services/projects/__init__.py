"""Projects: the spec a user writes per model (input kind and schema, labels, model, SLO, drift),
how it is loaded and checked; services/projects/catalog.py is the catalog services keep of it
(see docs/PROJECTS.md)."""

from services.projects.loading import (
    SpecInvalid,
    load_spec,
    load_spec_file,
    parse_spec_json,
    spec_json,
    spec_sha256,
)
from services.projects.spec import (
    MATERIALISE_MAX,
    Column,
    ImageInput,
    InputSpec,
    ProjectSpec,
    TabularInput,
    TextInput,
    materialised,
)

__all__ = [
    "MATERIALISE_MAX",
    "Column",
    "ImageInput",
    "InputSpec",
    "ProjectSpec",
    "SpecInvalid",
    "TabularInput",
    "TextInput",
    "load_spec",
    "load_spec_file",
    "materialised",
    "parse_spec_json",
    "spec_json",
    "spec_sha256",
]
