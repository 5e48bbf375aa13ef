"""Buggy variants: a reference solution with one bug put back, kept as data.

A variant is tests/variants/NAME.toml, a few replacements against its stage's solution:

    stage = "01_echo"
    bug = "what is wrong, in words"
    caught_by = ["test_a", "test_b"]      # the graded tests that must fail on it
    failure_words = ["reset", "..."]       # words their failure text must contain

    [[replace]]
    file = "server.py"                     # a program of the stage (course.toml)
    find = '''
    exact lines of solutions/STAGE/server.py, found exactly once
    '''
    replace = '''
    the lines with the bug, and a comment at it
    '''

build() writes DEST/STAGE/ (the solution's files, the replacements applied), a folder
to grade with --impl=DEST. A replacement whose find text is missing from the solution,
or found more than once, makes the variant stale: StaleVariant names the variant, the
file and the text, so a solution that changes without its variants fails loudly.
"""

import difflib
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from grader.course import ROOT, load_stages

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI (see requirements.txt)
    import tomli as tomllib

VARIANTS = Path("tests") / "variants"
SOLUTIONS = Path("solutions")
SUFFIX = ".toml"
KEYS = {"stage", "bug", "caught_by", "failure_words", "replace"}
REPLACE_KEYS = {"file", "find", "replace"}


class VariantError(ValueError):
    """A variant's spec cannot be used: malformed, or stale against its solution."""


class StaleVariant(VariantError):
    """A find text no longer occurs exactly once in its solution file."""


@dataclass(frozen=True)
class Replacement:
    file: str
    find: str
    replace: str


@dataclass(frozen=True)
class Variant:
    name: str
    stage: str
    bug: str
    caught_by: tuple
    failure_words: tuple
    replacements: tuple
    path: Path


def variants_folder(root=ROOT, folder=None):
    """Where the specs are: FOLDER if given, else ROOT/tests/variants."""
    return Path(folder) if folder is not None else Path(root) / VARIANTS


def variant_names(root=ROOT, folder=None):
    """Every variant's name (its file name without .toml), sorted."""
    return sorted(path.stem for path in variants_folder(root, folder).glob(f"*{SUFFIX}"))


def load_variant(name, root=ROOT, folder=None):
    """The Variant in tests/variants/NAME.toml (or FOLDER/NAME.toml); VariantError if malformed.

    root is the course the variant is built against: its course.toml and solutions/.
    """
    path = variants_folder(root, folder) / f"{name}{SUFFIX}"
    if not path.is_file():
        raise VariantError(f"no variant {name!r}: {path} does not exist (see: python tools/variant.py list)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise VariantError(f"variant {name}: {path} is not valid TOML: {error}") from None
    return _variant_from(name, path, data, root)


def load_variants(root=ROOT, stages=None, folder=None):
    """Every variant (of the given stage slugs only, if any), in name order."""
    variants = [load_variant(name, root, folder) for name in variant_names(root, folder)]
    return [v for v in variants if stages is None or v.stage in stages]


def _variant_from(name, path, data, root):
    def problem(text):
        return VariantError(f"variant {name} ({path}): {text}")

    unknown = set(data) - KEYS
    if unknown:
        raise problem(f"unknown key(s) {sorted(unknown)}; a variant has {sorted(KEYS)}")
    programs = {stage.slug: stage.programs for stage in load_stages(root)}
    stage = data.get("stage")
    if stage not in programs:
        raise problem(f"stage {stage!r} is not one of course.toml's stages {sorted(programs)}")
    if not str(data.get("bug", "")).strip():
        raise problem("no bug (say in words what is wrong)")
    caught_by, words = data.get("caught_by"), data.get("failure_words")
    for key, value in (("caught_by", caught_by), ("failure_words", words)):
        if not value or not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise problem(f"{key} must be a non-empty list of strings")
    replacements = []
    for number, entry in enumerate(data.get("replace") or [], 1):
        if not isinstance(entry, dict) or set(entry) != REPLACE_KEYS:
            raise problem(f"[[replace]] number {number} must have exactly the keys {sorted(REPLACE_KEYS)}")
        if entry["file"] not in programs[stage]:
            raise problem(f"[[replace]] number {number}: file {entry['file']!r} is not a program of "
                          f"{stage} (course.toml: {list(programs[stage])})")
        if not entry["find"]:
            raise problem(f"[[replace]] number {number}: find is empty")
        replacements.append(Replacement(entry["file"], entry["find"], entry["replace"]))
    if not replacements:
        raise problem("no [[replace]] entry: a variant changes its solution")
    return Variant(name, stage, data["bug"], tuple(caught_by), tuple(words), tuple(replacements), path)


def solution_folder(variant, root=ROOT):
    return Path(root) / SOLUTIONS / variant.stage


def patched_programs(variant, root=ROOT):
    """{file: (solution text, variant text)}; StaleVariant if a find is missing, repeated or overlaps."""
    folder = solution_folder(variant, root)
    originals, spans = {}, {}
    for replacement in variant.replacements:
        if replacement.file not in originals:
            source = folder / replacement.file
            if not source.is_file():
                raise StaleVariant(f"variant {variant.name}: {source} does not exist")
            originals[replacement.file] = source.read_text(encoding="utf-8")
        text = originals[replacement.file]
        count = text.count(replacement.find)
        if count != 1:
            where = "does not occur" if count == 0 else f"occurs {count} times"
            raise StaleVariant(
                f"variant {variant.name} is stale: in {SOLUTIONS.as_posix()}/{variant.stage}/{replacement.file} "
                f"this find text {where} (it must occur exactly once):\n{_indented(replacement.find)}\n"
                f"Has the solution changed? Bring {variant.path.name} along with it.")
        start = text.index(replacement.find)
        spans.setdefault(replacement.file, []).append((start, start + len(replacement.find), replacement))
    patched = {}
    for file, found in spans.items():
        found.sort(key=lambda span: span[0])
        for (_, end, first), (start, _, second) in zip(found, found[1:]):
            if start < end:
                raise StaleVariant(f"variant {variant.name}: in {file} the find texts overlap:\n"
                                   f"{_indented(first.find)}\nand\n{_indented(second.find)}")
        text, pieces, at = originals[file], [], 0
        for start, end, replacement in found:
            pieces += [text[at:start], replacement.replace]
            at = end
        pieces.append(text[at:])
        patched[file] = (text, "".join(pieces))
    return patched


def build(variant, dest, root=ROOT):
    """Write DEST/STAGE/: the solution's files with the variant's replacements. Returns DEST/STAGE.

    DEST is then a folder to grade: python -m pytest --impl=DEST tests/test_NN_*.py
    """
    if isinstance(variant, str):
        variant = load_variant(variant, root)
    programs = patched_programs(variant, root)  # stale: fail before writing anything
    target = Path(dest) / variant.stage
    target.mkdir(parents=True, exist_ok=True)
    for source in solution_folder(variant, root).iterdir():
        if source.is_file():
            shutil.copy2(source, target / source.name)
    for file, (_, text) in programs.items():
        (target / file).write_text(text, encoding="utf-8")
    return target


def changed_lines(variant, root=ROOT):
    """The lines removed from and added to the solution (a unified diff's - and + lines)."""
    changed = []
    for file, (before, after) in patched_programs(variant, root).items():
        diff = difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
        changed += [line for line in diff if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    return changed


def diff_text(variant, root=ROOT):
    """The variant as a unified diff against its solution (for reading)."""
    lines = []
    for file, (before, after) in patched_programs(variant, root).items():
        where = f"{SOLUTIONS.as_posix()}/{variant.stage}/{file}"
        lines += difflib.unified_diff(before.splitlines(), after.splitlines(), where,
                                      f"{variant.name}/{variant.stage}/{file}", lineterm="")
    return "\n".join(lines)


def failure_text(variant, results):
    """The failure output of the variant's caught_by tests, from a run's TestResults (grader.results)."""
    return "\n".join(result.output for result in results if result.function in variant.caught_by)


def missing_failure_words(variant, failure_text):
    """The failure_words that the failure text does not contain (case-sensitive)."""
    return [word for word in variant.failure_words if word not in failure_text]


def problems(root=ROOT, folder=None):
    """{variant name: what is wrong with it} for every malformed or stale variant."""
    found = {}
    for name in variant_names(root, folder):
        try:
            patched_programs(load_variant(name, root, folder), root)
        except VariantError as error:
            found[name] = str(error)
    return found


def _indented(text):
    return "\n".join("    | " + line for line in text.rstrip("\n").splitlines())
