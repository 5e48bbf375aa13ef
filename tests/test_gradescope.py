"""Self-check of the Gradescope autograder (gradescope/): what no submission can forge or see.

Builds the autograder zip for stage 01 with a hidden test file, lays out a fake /autograder
(AUTOGRADER_ROOT) with the zip's contents as source/, and grades a submission that tries to
take part in its own grading (a conftest.py, a pytest.ini, a sitecustomize.py). Not graded
(no points); runs under --impl solutions. POSIX only: process groups, users, /proc.
"""

import functools
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
GRADESCOPE = ROOT / "gradescope"

pytestmark = [pytest.mark.selfcheck,
              pytest.mark.skipif(sys.platform == "win32", reason="Gradescope runs Linux; users and /proc are POSIX")]

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
HIDDEN_VISIBILITY = "after_published"  # not the default: proves the instructor's choice is kept
SECRET_NAME = "test_hidden_secret_marker_passes"
SECRET_FAILURE = "SECRET-FAILURE-TEXT-4711"
FORGED_SCORE = 1000

HIDDEN_TEST = f'''
import pytest

@pytest.mark.points(2)
def {SECRET_NAME}(stage_dir):
    """A hidden test that a correct stage 01 passes."""
    assert (stage_dir / "server.py").is_file()

@pytest.mark.points(3)
def test_hidden_secret_marker_fails(stage_dir):
    """A hidden test that always fails, with a text no student may see."""
    assert False, "{SECRET_FAILURE}"
'''
HIDDEN_PASSING_POINTS = 2

# A submission that tries to grade itself: each file would give it FORGED_SCORE, or no tests.
FORGING_CONFTEST = f'''
import json
def pytest_collection_modifyitems(items):
    items[:] = []
def pytest_sessionfinish(session):
    path = session.config.getoption("--grade-json", None)
    if path:
        open(path, "w").write(json.dumps({{"score": {FORGED_SCORE}, "tests": []}}))
'''
FORGING_PYTEST_INI = "[pytest]\naddopts = -p no:grader.plugin -p no:timeout\ntimeout = 0\n"
FORGING_SITECUSTOMIZE = f"import sys\nprint('forged {FORGED_SCORE}')\n"


def run(args, env=None, timeout=300, cwd=ROOT):
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@functools.lru_cache(maxsize=None)
def expected_stage01_points():
    """Points of stage 01's public tests, as points_table.py counts them."""
    return float(stage01_summary_row()[2])


def expected_stage01_tests():
    """How many graded tests stage 01 has (public ones)."""
    return int(stage01_summary_row()[1])


def stage01_summary_row():
    result = run([sys.executable, "tools/points_table.py", "--summary", "--stages", "01"])
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(l for l in result.stdout.splitlines() if l.startswith("| 01_echo"))
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


@pytest.fixture(scope="module")
def autograder_zip(tmp_path_factory):
    """(zip path, make_autograder's output): stage 01 plus a hidden file."""
    folder = tmp_path_factory.mktemp("build")
    hidden = folder / "test_01_hidden.py"
    hidden.write_text(HIDDEN_TEST)
    zip_path = folder / "autograder.zip"
    built = run([sys.executable, GRADESCOPE / "make_autograder.py", "--out", zip_path, "--stages", "01",
                 "--hidden", hidden, "--hidden-visibility", HIDDEN_VISIBILITY])
    assert built.returncode == 0, built.stdout + built.stderr
    return zip_path, built.stdout


def lay_out_autograder(zip_path, home):
    """A fake /autograder: the zip's contents as source/, with the modes Gradescope gives them."""
    with zipfile.ZipFile(zip_path) as zipped:
        zipped.extractall(home / "source")
        for info in zipped.infolist():
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(home / "source" / info.filename, mode)
    (home / "results").mkdir()


def forging_repository_zip(archive, uid_folder=None):
    """A zip of a whole repository: the stage 01 solution, plus files that try to forge grades.

    With uid_folder, the server first writes the uid it runs as into that folder.
    """
    repo = Path(tempfile.mkdtemp()) / "my-repo"
    try:
        shutil.copytree(ROOT / "solutions" / "01_echo", repo / "stages" / "01_echo",
                        ignore=shutil.ignore_patterns("__pycache__"))
        if uid_folder is not None:
            uid_recorder(repo / "stages" / "01_echo" / "server.py", uid_folder)
        for folder in (repo, repo / "stages", repo / "stages" / "01_echo"):
            (folder / "conftest.py").write_text(FORGING_CONFTEST)
            (folder / "pytest.ini").write_text(FORGING_PYTEST_INI)
            (folder / "sitecustomize.py").write_text(FORGING_SITECUSTOMIZE)
        (repo / "tests").mkdir()
        (repo / "tests" / "test_01_echo.py").write_text("def test_nothing():\n    pass\n")
        archive.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(archive, "w") as zipped:
            for path in sorted(repo.rglob("*")):
                zipped.write(path, path.relative_to(repo.parent).as_posix())
    finally:
        shutil.rmtree(repo.parent)
    return archive


def runs_as(uid, python):
    """True when `uid` can run this interpreter (the folders above it searchable, and so on)."""
    try:
        probe = subprocess.run([python, "-c", "pass"], cwd="/", user=uid, group=uid, extra_groups=[],
                               env={"PATH": os.environ.get("PATH", "")}, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


def interpreter_for_unprivileged_programs():
    """(python, extra environment) that root can grade with and an unprivileged user can run.

    This interpreter when the grading user may run it. Otherwise (e.g. one under /root) the
    system's Python of the same version, with this interpreter's packages on PYTHONPATH for
    root's pytest: the programs under test need the standard library only. None when neither.
    """
    if runs_as(private_uid(), sys.executable):
        return sys.executable, {}
    system = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    if Path(system).is_file() and runs_as(private_uid(), system):
        packages = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
        return system, {"PYTHONPATH": os.pathsep.join(packages)}
    return None


def private_uid():
    """A uid for this run's programs that no other grading run on this machine is using.

    Each run kills every process of its grading uid when it ends, so runs that share one
    (other engineers' grade_all.py or self-checks: slots 64100, 64101...) kill each other's servers.
    """
    return 64100 + 700 + os.getpid() % 250


def uid_recorder(server_py, folder):
    """Make the server write the uid it runs as into `folder` before it starts serving."""
    source = server_py.read_text()
    record = (f"import os as _os\n"
              f"open(_os.path.join({str(folder)!r}, 'uid-%d' % _os.getpid()), 'w').write(str(_os.getuid()))\n")
    server_py.write_text(record + source)


def test_the_zip_ships_the_grader_and_no_solution(autograder_zip):
    zip_path, built = autograder_zip
    with zipfile.ZipFile(zip_path) as zipped:
        names = set(zipped.namelist())
        assert (zipped.getinfo("run_autograder").external_attr >> 16) & 0o111
        assert (zipped.getinfo("setup.sh").external_attr >> 16) & 0o111
        settings = json.loads(zipped.read("gradescope/settings.json"))
    needed = {"setup.sh", "run_autograder", "course.toml", "pyproject.toml", "pytest.ini",
              "grader/__init__.py", "grader/course.py", "grader/intake.py", "grader/plugin.py",
              "grader/launch.py", "grader/grading.py", "grader/harness/client.py",
              "grader/noise/sitecustomize.py", "tests/conftest.py",
              "tests/test_01_echo.py", "tests/test_01_hidden.py", "gradescope/settings.json"}
    assert needed <= names, f"missing from the zip: {sorted(needed - names)}"
    assert not any(n.startswith(("solutions/", "stages/")) for n in names), "no solution or starter code"
    assert not any(n.startswith("tests/test_") and not n.startswith("tests/test_01_") for n in names)
    assert settings["hidden_files"] == ["test_01_hidden.py"]
    assert settings["hidden_visibility"] == HIDDEN_VISIBILITY
    total = expected_stage01_points() + 2 + 3
    assert f"= {total:g} in total" in built, f"make_autograder must print the total with hidden points:\n{built}"


def test_setup_sh_installs_the_grader_and_creates_the_user(tmp_path):
    """setup.sh against a temporary root, with stand-ins that only log the commands it runs."""
    home = tmp_path / "autograder"
    (home / "source" / "grader").mkdir(parents=True)
    (home / "source" / "grader" / "launch.py").write_text("")
    stubs, log = tmp_path / "bin", tmp_path / "commands.log"
    stubs.mkdir()
    for name in ("apt-get", "useradd", "runuser", "python3"):
        (stubs / name).write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\n')
        (stubs / name).chmod(0o755)
    (stubs / "id").write_text("#!/bin/sh\nexit 1\n")  # no such user yet
    (stubs / "id").chmod(0o755)
    env = dict(os.environ, PATH=f"{stubs}{os.pathsep}{os.environ['PATH']}")
    result = run(["bash", GRADESCOPE / "setup.sh", home], env=env, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    commands = log.read_text().splitlines()
    assert f"python3 -m pip install --no-cache-dir -e {home}/source" in commands, commands
    assert any(c.startswith("useradd") and c.endswith(" student") for c in commands), commands
    assert any(c.startswith("runuser -u student -- python3") for c in commands), \
        f"setup.sh must check that the user can run Python: {commands}"


@pytest.mark.skipif(not IS_ROOT, reason="only root can give programs another user")
def test_refuses_to_grade_when_the_user_cannot_run_the_programs(autograder_zip, tmp_path):
    """The course under a folder that only root may enter: never graded as root instead."""
    zip_path, _ = autograder_zip
    os.chmod(tmp_path, 0o700)
    home = tmp_path / "autograder"
    lay_out_autograder(zip_path, home)
    shutil.copytree(ROOT / "solutions" / "01_echo", home / "submission" / "01_echo")
    marker = tmp_path / "ran"
    (home / "submission" / "01_echo" / "server.py").write_text(
        f"open({str(marker)!r}, 'w').write('a program ran')\n")
    env = dict(os.environ, AUTOGRADER_ROOT=str(home))
    result = run([sys.executable, home / "source" / "run_autograder"], env=env)
    assert result.returncode != 0, "a refusal must end with a non-zero status"
    results = json.loads((home / "results" / "results.json").read_text())
    assert results["score"] == 0 and results["tests"] == []
    assert "NOT graded" in results["output"] and "never run as root" in results["output"], results["output"]
    assert "setup.sh" in results["output"], "the refusal must say what to fix in the setup"
    assert not marker.exists(), "the student's program ran although the grading user could not run it"


def test_grades_a_forging_repository_zip_honestly(autograder_zip):
    zip_path, _ = autograder_zip
    python, extra_env = (sys.executable, {})
    if IS_ROOT:
        found = interpreter_for_unprivileged_programs()
        if found is None:
            pytest.skip("no Python here that an unprivileged user can run (the refusal test covers it)")
        python, extra_env = found
    # Not under pytest's tmp_path: the grading user must be able to reach the course.
    top = Path(tempfile.mkdtemp(prefix="gradescope-check-"))
    try:
        os.chmod(top, 0o755)
        home = top / "autograder"
        lay_out_autograder(zip_path, home)
        uids = top / "uids"
        uids.mkdir()
        os.chmod(uids, 0o1777)
        forging_repository_zip(home / "submission" / "my-repo.zip", uid_folder=uids)
        env = dict(os.environ, AUTOGRADER_ROOT=str(home), AUTOGRADER_UID=str(private_uid()), **extra_env)
        result = run([python, home / "source" / "run_autograder"], env=env)
        printed = result.stdout + result.stderr
        assert result.returncode == 0, printed
        results = json.loads((home / "results" / "results.json").read_text())
        tests = results["tests"]
        public = [t for t in tests if "secret_marker" not in t["name"]]
        hidden = [t for t in tests if "secret_marker" in t["name"]]

        failed = [f"{t['name']}: {t['output']}" for t in public if t.get("status") != "passed"]
        assert not failed, "the stage 01 solution must pass every public test:\n" + "\n".join(failed)
        assert results["score"] == expected_stage01_points() + HIDDEN_PASSING_POINTS, \
            "the score must be the sum of the tests, hidden ones included, whatever the submission's files say"
        assert len(public) == expected_stage01_tests() and len(hidden) == 2, [t["name"] for t in tests]
        numbers = [t["number"] for t in tests]
        assert len(set(numbers)) == len(numbers), f"test numbers must be unique: {numbers}"
        assert results["output_format"] == "text" and results["test_output_format"] == "text"
        assert all(t["visibility"] == HIDDEN_VISIBILITY for t in hidden), hidden
        assert all(t["visibility"] == "visible" for t in public), public
        for secret in ("secret_marker", SECRET_FAILURE, "test_01_hidden"):
            assert secret not in results["output"], f"{secret} leaks into the output students see"
            assert secret not in printed, f"{secret} leaks into what run_autograder prints"
        assert results.get("stdout_visibility") == "hidden"
        assert str(FORGED_SCORE) not in results["output"]

        recorded = [int(p.read_text()) for p in uids.iterdir()]
        assert recorded, "the submission's server never ran"
        if IS_ROOT:
            assert set(recorded) == {private_uid()}, \
                f"graded as root, the programs must run as the grading user only; they ran as uids {recorded}"
    finally:
        shutil.rmtree(top, ignore_errors=True)


def load_run_autograder(home, monkeypatch):
    """run_autograder as a module, its root moved to `home` (it has no .py suffix)."""
    import importlib.machinery
    import importlib.util
    monkeypatch.setenv("AUTOGRADER_ROOT", str(home))
    monkeypatch.syspath_prepend(str(home / "source"))  # its own folder first, as when run as a script
    loader = importlib.machinery.SourceFileLoader("run_autograder_under_test", str(home / "source" / "run_autograder"))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now


def test_one_time_limit_covers_the_public_and_the_hidden_run(autograder_zip, tmp_path, monkeypatch):
    """A public run that takes most of the limit leaves the hidden run only the rest of it."""
    zip_path, _ = autograder_zip
    home = tmp_path / "autograder"
    lay_out_autograder(zip_path, home)
    shutil.copytree(ROOT / "solutions" / "01_echo", home / "submission" / "01_echo")
    module = load_run_autograder(home, monkeypatch)
    (tmp_path / "private").mkdir()
    (tmp_path / "shared").mkdir()
    clock, given = FakeClock(), []

    def fake_run(files, impl, private, label, seconds_left, sandbox):
        given.append((label, seconds_left))
        clock.now += min(400.0, seconds_left)  # each run takes 400 s, or is stopped at its deadline
        log_path = private / f"{label}.log"
        log_path.write_text(f"the {label} run\n")
        test = {"name": f"01_echo: a {label} test", "number": "1", "score": 1.0, "max_score": 1.0,
                "status": "passed", "visibility": "visible"}
        return {"tests": [test], "output": f"{label} scoreboard"}, (0 if seconds_left > 400 else None), \
            min(400.0, seconds_left), log_path

    monkeypatch.setattr(module, "time", clock)
    monkeypatch.setattr(module, "run_group", fake_run)
    monkeypatch.setattr(module, "grading_sandbox", lambda: None)
    results = module.grade({"timeout": 540, "hidden_files": ["test_01_hidden.py"],
                            "hidden_visibility": HIDDEN_VISIBILITY},
                           tmp_path / "private", tmp_path / "shared")
    assert [label for label, _ in given] == ["public", "hidden"]
    assert given[0][1] == 540 and given[1][1] == 140, f"one limit for both runs: {given}"
    assert [t["number"] for t in results["tests"]] == ["1", "2"]
    assert results["tests"][1]["visibility"] == HIDDEN_VISIBILITY
    assert "hidden" not in results["output"], results["output"]
    assert "time limit (540 s) was reached" in results["output"], results["output"]
