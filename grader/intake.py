"""Take in a submission: copy exactly the program files the course lists, nothing else.

A submission is a folder or a .zip: a folder laid out like stages/ (NN_name/server.py ...),
a copy or clone of the whole repository (stages/NN_name/...), or either of those wrapped in
one or two more folders, as unzipping often leaves them. Whatever else it holds (a
conftest.py, pytest.ini, sitecustomize.py, *.pth, tests of its own, solutions/) is never
copied, so nothing of a submission can take part in the grading run but the programs,
which run in processes of their own.

Refused, each with a note: symbolic links, anything that is not a regular file, and
program files over MAX_PROGRAM_BYTES. A zip is read member by member; only the chosen
programs are extracted, so a zip bomb costs nothing.
"""

import os
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .course import load_stages

MAX_PROGRAM_BYTES = 1_000_000
# Folders whose programs are never the student's own work.
NOT_SUBMITTED = {"solutions", "tests", "variants", "alternatives", "hostile", "__MACOSX",
                 "node_modules", "site-packages"}
DEEPEST = 4  # how many folders may wrap the stage folders ("x/y/stages/01_echo/server.py")


@dataclass
class Entry:
    """One file-like thing in a submission, by its path relative to the submission."""
    path: PurePosixPath
    kind: str        # "file", "link" or "special"
    size: int
    read: object     # read(limit) -> bytes (only for kind == "file")


@dataclass
class Intake:
    layout: str = None                           # where the stage folders were found ("" = top)
    copied: dict = field(default_factory=dict)   # stage slug -> [program names]
    notes: list = field(default_factory=list)    # what was refused or missing, for the report


def take_in(source, dest, root=None):
    """Copy the listed programs of `source` (folder or .zip) into dest/NN_name/; return an Intake."""
    source, dest = Path(source), Path(dest)
    stages = load_stages(root) if root else load_stages()
    dest.mkdir(parents=True, exist_ok=True)
    dest.chmod(0o755)
    if source.is_file() and source.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(source) as archive:
                return _take(_zip_entries(archive), stages, dest)
        except (zipfile.BadZipFile, OSError) as error:
            return Intake(notes=[f"the zip could not be read: {error}"])
    if source.is_dir():
        return _take(_folder_entries(source), stages, dest)
    return Intake(notes=[f"{source.name}: neither a folder nor a .zip"])


def _take(entries, stages, dest):
    intake = Intake()
    wanted = {(stage.slug, program) for stage in stages for program in stage.programs}
    by_prefix = {}  # prefix -> {(slug, program): Entry}
    for entry in entries:
        parts = entry.path.parts
        if len(parts) < 2 or (parts[-2], parts[-1]) not in wanted:
            continue
        prefix = parts[:-2]
        if len(prefix) > DEEPEST or any(p in NOT_SUBMITTED or p.startswith(".") for p in prefix):
            continue
        by_prefix.setdefault(prefix, {})[(parts[-2], parts[-1])] = entry
    if not by_prefix:
        intake.notes.append("no stage folders found (expected NN_name/server.py, or stages/NN_name/...)")
        return intake
    prefix = _best_layout(by_prefix)
    intake.layout = "/".join(prefix)
    found = by_prefix[prefix]
    for stage in stages:
        for program in stage.programs:
            entry = found.get((stage.slug, program))
            if entry is None:
                continue
            problem = _refusal(entry)
            if problem:
                intake.notes.append(f"{stage.slug}/{program}: {problem}; not graded")
                continue
            data = entry.read(MAX_PROGRAM_BYTES + 1)
            if len(data) > MAX_PROGRAM_BYTES:
                intake.notes.append(f"{stage.slug}/{program}: larger than {MAX_PROGRAM_BYTES} bytes; not graded")
                continue
            target = dest / stage.slug / program
            target.parent.mkdir(exist_ok=True)
            target.write_bytes(data)
            # Readable by a grading user of its own (the programs may run as one); writable by nobody else.
            target.parent.chmod(0o755)
            target.chmod(0o644)
            intake.copied.setdefault(stage.slug, []).append(program)
    return intake


def _best_layout(by_prefix):
    """The folder holding the most stages; of equals, the shallowest, then the one named stages/."""
    def rank(prefix):
        return (-len({slug for slug, _ in by_prefix[prefix]}), len(prefix), prefix[-1:] != ("stages",), prefix)
    return min(by_prefix, key=rank)


def _refusal(entry):
    if entry.kind == "link":
        return "a symbolic link (submit the file itself)"
    if entry.kind != "file":
        return "not a regular file"
    if entry.size > MAX_PROGRAM_BYTES:
        return f"larger than {MAX_PROGRAM_BYTES} bytes"
    return None


def _folder_entries(top):
    """Every file under `top`, links not followed, hidden and non-submitted folders not entered."""
    for folder, dirs, files in os.walk(top, followlinks=False):
        depth = len(Path(folder).relative_to(top).parts)
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in NOT_SUBMITTED and depth < DEEPEST + 1]
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            path = os.path.join(folder, name)
            try:
                info = os.lstat(path)
            except OSError:
                continue
            kind = "link" if stat.S_ISLNK(info.st_mode) else "file" if stat.S_ISREG(info.st_mode) else "special"
            yield Entry(PurePosixPath(Path(path).relative_to(top).as_posix()), kind, info.st_size,
                        _file_reader(path))


def _file_reader(path):
    def read(limit):
        # O_NOFOLLOW: a file swapped for a link after the walk is still refused.
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        descriptor = os.open(path, flags)
        with os.fdopen(descriptor, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return b""
            return handle.read(limit)
    return read


def _zip_entries(archive):
    for info in archive.infolist():
        name = info.filename.replace("\\", "/")
        path = PurePosixPath(name)
        if info.is_dir() or path.is_absolute() or ".." in path.parts:
            continue
        mode = info.external_attr >> 16
        # Zips made without Unix modes (Windows, or no file type bits) hold regular files.
        kind = "link" if stat.S_ISLNK(mode) else "special" if stat.S_IFMT(mode) and not stat.S_ISREG(mode) else "file"
        yield Entry(path, kind, info.file_size, _member_reader(archive, info))


def _member_reader(archive, info):
    def read(limit):
        with archive.open(info) as handle:
            return handle.read(limit)
    return read
