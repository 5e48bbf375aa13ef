"""Registers the course's command-line options.

pytest reads options before it looks inside tests/, so they are declared here,
at the top of the repository; everything else is in tests/conftest.py.
"""


def pytest_addoption(parser):
    group = parser.getgroup("threaded chat")
    group.addoption("--impl", default="stages", metavar="WHAT",
                    help="what to grade: 'stages' (default, your work), 'solutions', "
                         "or a path to a folder laid out like stages/")
    group.addoption("--grade-json", default=None, metavar="FILE",
                    help="also write the grades as a Gradescope results.json")
