"""The course's stages, as course.toml lists them."""

import re
import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI (see requirements.txt)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = "course.toml"
SLUG = re.compile(r"^(\d\d)_[a-z0-9_]+$")
# A test file grades the stage whose number it starts with: tests/test_04_broadcast.py,
# and an instructor's own tests/test_04_hidden.py, both grade 04_broadcast.
STAGE_TEST_FILE = re.compile(r"^test_(\d\d)_[a-z0-9_]*\.py$")


@dataclass(frozen=True)
class Stage:
    slug: str
    title: str
    programs: tuple
    points: float = 0.0      # what its graded tests are worth together
    notebooks: tuple = ()    # paths from the course's top folder

    @property
    def number(self):
        return self.slug[:2]


def load_stages(root=ROOT):
    """The stages in course order. A broken manifest is a course bug: fail loudly."""
    path = Path(root) / MANIFEST
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    stages = []
    for entry in data.get("stage", []):
        slug = entry["slug"]
        if not SLUG.match(slug):
            raise ValueError(f"{path}: stage slug {slug!r} is not NN_name")
        programs = tuple(entry["programs"])
        for program in programs:
            if "/" in program or "\\" in program or not program.endswith(".py"):
                raise ValueError(f"{path}: {slug}: program {program!r} must be a plain .py file name")
        stages.append(Stage(slug, entry.get("title", ""), programs, float(entry.get("points", 0)),
                            tuple(entry.get("notebooks", ()))))
    return stages


def stage_named(number_or_slug, root=ROOT):
    """The Stage for '04', '4' or '04_broadcast'; None if the course has no such stage."""
    key = str(number_or_slug)
    key = key.zfill(2) if key.isdigit() else key
    for stage in load_stages(root):
        if key in (stage.slug, stage.number):
            return stage
    return None


def stage_number_of(path):
    """The stage number a test file's name gives ('04' for test_04_hidden.py), or None."""
    match = STAGE_TEST_FILE.match(Path(str(path)).name)
    return match.group(1) if match else None


def stage_of_test_file(path, root=ROOT):
    """The stage slug a test file grades ('04_broadcast' for test_04_*.py), or None."""
    match = STAGE_TEST_FILE.match(Path(str(path)).name)
    if not match:
        return None
    stage = stage_named(match.group(1), root)
    return stage.slug if stage else None
