#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image.
#
#   setup.sh [ROOT]     ROOT defaults to $AUTOGRADER_ROOT, then to /autograder
#
# It installs Python, then the course's grader package from ROOT/source (pyproject.toml:
# the pytest plugin, with pytest, pytest-timeout and tomli; the notebooks' packages are not
# needed to grade), and creates the unprivileged user `student` that run_autograder runs
# students' programs as. It ends by checking that this user can run Python on the course:
# run_autograder refuses to grade (it never runs students' code as root) when it cannot.
set -euo pipefail
ROOT="${1:-${AUTOGRADER_ROOT:-/autograder}}"
SOURCE="$ROOT/source"
GRADER_USER="${AUTOGRADER_USER:-student}"
cd "$SOURCE"

export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends python3 python3-pip python3-venv

# The grader package, editable from the source folder, with its dependencies. Newer images
# mark the system Python "externally managed" (PEP 668): then pip needs to be told.
pip_install() {
    python3 -m pip install --no-cache-dir "$@" \
        || python3 -m pip install --no-cache-dir --break-system-packages "$@"
}
pip_install -e "$SOURCE"

# Students' programs run as this user, never as root. It reads the course, nothing more.
id -u "$GRADER_USER" >/dev/null 2>&1 || useradd --create-home --shell /usr/sbin/nologin "$GRADER_USER"
chmod a+rX "$ROOT"
chmod -R a+rX "$SOURCE"

python3 --version
python3 -m pytest --version
# Fails the build now, with the reason, rather than every submission later.
runuser -u "$GRADER_USER" -- python3 -c "import sys; print('user $GRADER_USER can run', sys.executable)"
runuser -u "$GRADER_USER" -- test -r "$SOURCE/grader/launch.py"
