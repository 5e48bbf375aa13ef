import glob
import os
from pathlib import Path

FORGED = "threaded-chat-hostile-forged"


def course_folder():
    """The course's folder, from the launcher's path in the parent's command line."""
    try:
        arguments = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    for argument in arguments:
        if argument.endswith(b"launch.py"):
            return Path(argument.decode()).parent.parent
    return None


def mischief():
    """Create files in the course (a test that would pass) and in every results folder found."""
    targets = []
    root = course_folder()
    if root:
        targets += [root / "tests" / "test_01_zz_forged.py", root / "grader" / f"{FORGED}.txt"]
    for pattern in ("/tmp/*/*results*/*", "/tmp/*/*/*results*/*", "/tmp/*/*/*/*results*/*"):
        targets += [Path(folder) / "results.json" for folder in glob.glob(pattern)[:100]]
    for target in targets:
        try:
            target.write_text(f"# {FORGED}\n")
        except OSError:
            pass  # refused, as it should be
