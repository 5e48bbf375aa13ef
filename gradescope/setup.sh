#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image.
# It installs Python and what grading needs (pytest, pytest-timeout: see requirements.txt;
# the notebooks' packages are not needed to grade), and creates the unprivileged
# user that run_autograder runs students' code as.
set -euo pipefail
cd /autograder/source

export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends python3 python3-pip python3-venv

# Only the test runner's packages, with the versions requirements.txt asks for.
grep -E '^(pytest|pytest-timeout)([<>=!~ ].*)?$' requirements.txt > /tmp/grading-requirements.txt \
    || echo 'pytest' > /tmp/grading-requirements.txt
python3 -m pip install --no-cache-dir -r /tmp/grading-requirements.txt \
    || python3 -m pip install --no-cache-dir --break-system-packages -r /tmp/grading-requirements.txt

# Students' servers run as this user, never as root.
id -u student >/dev/null 2>&1 || useradd --create-home --shell /usr/sbin/nologin student
chmod -R a+rX /autograder/source
python3 --version
python3 -m pytest --version
