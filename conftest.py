"""Loads the course's pytest plugin (grader/plugin.py) when the course is not installed.

`pip install -r requirements.txt` installs the plugin so that pytest knows --impl
before it reads its arguments; this is the fallback for a checkout where that was
skipped (then only the --impl=PATH form works for paths outside the repository).
"""

pytest_plugins = ["grader.plugin"]
