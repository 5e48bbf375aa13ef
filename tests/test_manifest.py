"""The course manifest (course.toml) is the one list of the course: nothing exists beside it.

Like a checker that rejects what its manifest does not list: a stage folder, a test file,
a variant or a notebook that course.toml does not know is an error here, and each stage's
points in course.toml are what its graded tests are worth together.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from grader.course import STAGE_TEST_FILE, load_stages, stage_number_of
from grader.points import collect_points, points_by_stage
from grader.variants import load_variants

pytestmark = pytest.mark.selfcheck

ROOT = Path(__file__).resolve().parent.parent
STAGES = load_stages(ROOT)
SLUGS = {stage.slug for stage in STAGES}
NUMBERS = {stage.number for stage in STAGES}


def folders(parent):
    return sorted(path.name for path in (ROOT / parent).iterdir()
                  if path.is_dir() and not path.name.startswith((".", "__")))


@pytest.mark.parametrize("parent", ["stages", "solutions"])
def test_every_stage_folder_is_listed(parent):
    """stages/ and solutions/ hold the manifest's stages and nothing else."""
    unlisted = sorted(set(folders(parent)) - SLUGS)
    assert not unlisted, f"{parent}/ has folders course.toml does not list: {unlisted}"
    missing = sorted(SLUGS - set(folders(parent)))
    assert not missing, f"course.toml lists stages that {parent}/ lacks: {missing}"


def test_every_test_file_grades_a_listed_stage_or_is_a_selfcheck():
    """tests/test_NN_*.py grade stage NN of the manifest; other test files are self-checks."""
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        number = stage_number_of(path)
        if number is not None:
            assert number in NUMBERS, f"tests/{path.name} grades stage {number}, which course.toml lacks"
            continue
        text = path.read_text(encoding="utf-8")
        assert "pytest.mark.selfcheck" in text, (
            f"tests/{path.name} is not named test_NN_*.py after a stage of course.toml, "
            f"so it must be one of the course's self-checks (pytestmark = pytest.mark.selfcheck)")


def test_every_stage_has_its_test_file():
    names = [path.name for path in (ROOT / "tests").glob("test_*.py") if STAGE_TEST_FILE.match(path.name)]
    for stage in STAGES:
        assert f"test_{stage.slug}.py" in names, f"stage {stage.slug} has no tests/test_{stage.slug}.py"


def test_every_variant_is_of_a_listed_stage():
    for spec in load_variants():
        assert spec.stage in SLUGS, f"variant {spec.name} is of stage {spec.stage}, which course.toml lacks"


def test_every_notebook_is_listed_and_exists():
    """Each notebook explains some stage's ideas, and each stage names the notebooks that do."""
    listed = {notebook for stage in STAGES for notebook in stage.notebooks}
    for notebook in sorted(listed):
        assert (ROOT / notebook).is_file(), f"course.toml lists {notebook}, which does not exist"
    present = {path.relative_to(ROOT).as_posix() for path in (ROOT / "notebooks").glob("*.ipynb")}
    assert not present - listed, f"notebooks no stage of course.toml lists: {sorted(present - listed)}"
    for stage in STAGES:
        assert stage.notebooks, f"stage {stage.slug} names no notebook in course.toml"


def test_stage_points_are_what_its_tests_are_worth():
    files = [path for path in sorted((ROOT / "tests").glob("test_*.py")) if stage_number_of(path)]
    collected = points_by_stage(collect_points(files, ROOT))
    wrong = {stage.slug: (stage.points, collected.get(stage.slug, 0.0))
             for stage in STAGES if stage.points != collected.get(stage.slug, 0.0)}
    assert not wrong, ("course.toml's points differ from what the tests are worth "
                       "(stage: (course.toml, tests)): " + repr(wrong)
                       + "\nUpdate course.toml (and the README's points table) when tests change.")


def test_the_manifest_reader_is_the_only_stage_rule():
    """Stage discovery lives in grader/course.py: no other file slices names or has its own regex."""
    offenders = []
    for folder in ("grader", "tools", "gradescope", "tests"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_dir() or path.suffix not in (".py", "") or "variants" in path.parts \
                    or "alternatives" in path.parts or path.name == "test_manifest.py" \
                    or path == ROOT / "grader" / "course.py" or "__pycache__" in path.parts:
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            for needle in ("name[5:7]", 're.compile(r"^test_', 're.compile(r"test_', "sys.path.insert"):
                if needle in text:
                    offenders.append(f"{path.relative_to(ROOT)}: {needle}")
    assert not offenders, "outside grader/course.py: " + "; ".join(offenders)




@pytest.mark.parametrize("stage", [stage.number for stage in STAGES])
def test_diff_tool_shows_what_is_new_in_each_stage(stage):
    """python tools/diff.py NN (the READMEs' "what is new" command) works for every stage."""
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "diff.py"), stage],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(("--- solutions/", "# stages/")), result.stdout[:500]


def test_every_module_of_the_grader_and_every_tool_is_described():
    """docs/ARCHITECTURE.md names every module of grader/ and every tool, so the picture stays true."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    modules = [path for path in sorted((ROOT / "grader").rglob("*.py")) if path.name != "__init__.py"]
    missing = [path.relative_to(ROOT).as_posix() for path in modules
               if path.relative_to(ROOT).as_posix() not in text]
    missing += [f"tools/{path.stem}" for path in sorted((ROOT / "tools").glob("*.py")) if path.stem not in text]
    assert not missing, f"docs/ARCHITECTURE.md does not describe: {missing}"


def test_every_protocol_rule_names_tests_that_exist():
    """docs/PROTOCOL.md's rule -> test table: every rule has a test, and every test named exists."""
    text = (ROOT / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")
    table = text[text.index("## Rule → test"):]
    rows = [line for line in table.splitlines()
            if line.startswith("| ") and not line.startswith(("| rule", "|---"))]
    assert len(rows) > 40, "the rule -> test table was not found"
    defined = {f"{path.stem}::{name}" for path in (ROOT / "tests").glob("test_0*.py")
               for name in re.findall(r"^def (test_\w+)", path.read_text(encoding="utf-8"), re.M)}
    for row in rows:
        rule, _, tests = row.strip("| ").partition(" | ")
        named = re.findall(r"`(test_0\d_\w+::test_\w+)`", tests)
        stage_wide = re.findall(r"every test in `(test_0\d_\w+)`", tests)
        assert named or stage_wide, f"rule {rule!r} names no test"
        missing = [name for name in named if name not in defined]
        assert not missing, f"rule {rule!r} names tests that do not exist: {missing}"
