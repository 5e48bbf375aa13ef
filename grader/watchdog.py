"""The grader's time limit for one test: the test fails, and the run goes on to its scoreboard.

pytest.ini's `timeout` is pytest-timeout's setting. pytest-timeout enforces it in one of two
ways: with SIGALRM (its "signal" method, Linux and macOS) the test fails normally; with a
thread (its "thread" method, the only one on Windows, where there is no SIGALRM) it dumps
the stacks and ends the whole run with os._exit(): no scoreboard, no results.json, and the
programs under test left running. So this plugin takes the timer over, on every system,
through pytest-timeout's own hook for that (pytest_timeout_set_timer), and keeps its
settings: the limit (pytest.ini, --timeout, or a test's timeout mark) and the method.

For each test, a watchdog thread waits for the limit. When a test reaches it:
1. The watchdog stops the test's programs, and all they started, and refuses new ones. A
   test waiting for a server's reply, on a socket or on the program, wakes up: the
   connection closed, the program exited.
2. If the test has not ended INTERRUPT_AFTER seconds later, its thread is interrupted:
   a signal whose handler (installed for the test's duration) fails the test. With the
   signal method that is SIGALRM sent to the main thread, which interrupts any wait. With
   the thread method it is SIGINT, raised as Windows' Ctrl+C would be: on Windows that
   wakes time.sleep() too; a wait in a lock's acquire() it cannot wake there, nor a
   time.sleep() on POSIX (where the method is only ever forced).
3. However the test ended, its report says that it did not finish within N s, where it
   was waiting when time ran out, and what it reported once stopped.
4. The last resort, last_resort_after(N) seconds after the limit, if the test is still
   stuck: the test is recorded as failed, and every test not yet run as failed too ("not
   run: the run was stopped"), the run's end is played through pytest's own hooks (so the
   grades are written to results.json and the scoreboard is printed), every program is
   stopped, and only then does the run end with os._exit(1).

The course's plugin (grader/plugin.py) registers a Watchdog in pytest_configure.
"""

import os
import signal
import sys
import threading
import traceback
from pathlib import Path

import pytest

from grader.harness import process

# After the limit, how long a test whose programs were stopped may take to end by itself.
INTERRUPT_AFTER = 1.0
WATCH = pytest.StashKey()
# The text of the failure raised in the test's thread (replaced in the report).
INTERRUPTED = "(interrupted by the grader's time limit)"
EXIT_STATUS = 1  # a run that ends by the last resort: tests failed, as pytest would say


def last_resort_after(limit):
    """Seconds after the limit before the run is ended: far later, but not for ever."""
    return min(60.0, max(3.0, limit / 2))


def debugging():
    """True when a debugger is attached (pytest-timeout's own test): never stop a debugging session."""
    try:
        from pytest_timeout import is_debugging
    except ImportError:
        return False
    return is_debugging()


class Watchdog:
    """The pytest plugin: one Watch per test, in place of pytest-timeout's timer."""

    @pytest.hookimpl(tryfirst=True, optionalhook=True)
    def pytest_timeout_set_timer(self, item, settings):
        watch = Watch(item, float(settings.timeout), settings.method,
                      settings.disable_debugger_detection)
        item.stash[WATCH] = watch
        watch.start()
        return True  # pytest-timeout's own timer is not set

    @pytest.hookimpl(tryfirst=True, optionalhook=True)
    def pytest_timeout_cancel_timer(self, item):
        watch = item.stash.get(WATCH, None)
        if watch is None:
            return None  # not ours: pytest-timeout's own cancels it
        watch.cancel()
        return True

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_makereport(self, item, call):
        """A test that reached its limit fails, with the text of teaching_message()."""
        outcome = yield
        watch = item.stash.get(WATCH, None)
        if watch is None or not watch.fired.is_set():
            return
        report = outcome.get_result()
        if report.passed and report.when != "call":
            return  # a setup that passed is followed by the call; a clean teardown changes nothing
        reported = report.longreprtext if report.failed else ""
        report.outcome = "failed"
        report.longrepr = watch.teaching_message(reported)


class Watch:
    """One test's time limit, kept by a thread of its own."""

    def __init__(self, item, limit, method, ignore_debugger):
        self.item = item
        self.limit = limit
        self.method = method
        self.ignore_debugger = ignore_debugger
        self.fired = threading.Event()   # the limit was reached
        self.over = threading.Event()    # the test's protocol has ended (cancel)
        self.lock = threading.Lock()     # between the test's end and the last resort
        self.where = []                  # the test's stack when the limit was reached
        self.sent = False                # the watchdog sent its signal...
        self.consumed = False            # ...and the handler has seen it
        self.main_thread = threading.get_ident()
        self.signum, self.previous = None, None
        self.thread = threading.Thread(target=self._watch, daemon=True,
                                       name=f"grader watchdog {item.nodeid}")

    # ---- in the test's thread ------------------------------------------------------------

    def start(self):
        if threading.current_thread() is threading.main_thread():
            # Python runs signal handlers in the main thread only, and only it can install them.
            self.signum = signal.SIGALRM if self.method == "signal" and hasattr(signal, "SIGALRM") \
                else signal.SIGINT
            self.previous = signal.signal(self.signum, self._interrupted)
        self.thread.start()

    def cancel(self):
        with self.lock:
            self.over.set()
        # Once our signal is on its way, our handler stays: it must meet that signal, which
        # the previous handler would take for Ctrl+C at the keyboard (and end the run).
        if self.signum is not None and not self.sent and threading.current_thread() is threading.main_thread():
            signal.signal(self.signum, self.previous)
            self.signum = None
        if self.fired.is_set():
            process.allow_new_programs()

    def _interrupted(self, signum, frame):
        if not self.sent or self.consumed:
            return self._as_before(signum, frame)  # not ours: Ctrl+C at the keyboard, say
        self.consumed = True
        if self.over.is_set():
            return None  # the test ended by itself meanwhile
        pytest.fail(INTERRUPTED, pytrace=False)

    def _as_before(self, signum, frame):
        previous = self.previous
        if callable(previous):
            return previous(signum, frame)
        if signum == signal.SIGINT and previous != signal.SIG_IGN:
            raise KeyboardInterrupt
        return None

    # ---- in the watchdog's thread --------------------------------------------------------

    def _watch(self):
        if self.over.wait(self.limit):
            return
        if not self.ignore_debugger and debugging():
            return
        with self.lock:
            if self.over.is_set():
                return
            self.where = self._stack_of_the_test()
            self.fired.set()
        process.refuse_new_programs(
            f"The test tried to start a program after it had run out of time ({self.limit:g} s).")
        process.stop_all_programs()
        if self.over.wait(INTERRUPT_AFTER):
            return
        self._interrupt()
        if self.over.wait(last_resort_after(self.limit)):
            return
        self._end_the_run()

    def _interrupt(self):
        with self.lock:
            if self.signum is None or self.over.is_set():
                return  # no handler of ours (the test did not run in the main thread), or over
            self.sent = True
        if self.signum == signal.SIGINT:
            # As Ctrl+C would: on Windows raise() sets the event that time.sleep() waits on.
            signal.raise_signal(signal.SIGINT)
        else:
            signal.pthread_kill(self.main_thread, self.signum)

    def _stack_of_the_test(self):
        """The test's frames (the course's files and the test's own folder), innermost last."""
        frame = sys._current_frames().get(self.main_thread)
        if frame is None:
            return []
        summary = traceback.extract_stack(frame)
        ours = (Path(process.__file__).resolve().parents[2], Path(str(self.item.path)).resolve().parent)
        kept = [entry for entry in summary
                if not entry.filename.startswith("<") and "site-packages" not in entry.filename
                and any(folder in Path(entry.filename).resolve().parents for folder in ours)]
        if summary and (not kept or kept[-1] is not summary[-1]):
            kept.append(summary[-1])  # where it was blocked, even inside the standard library
        return kept[-8:]

    # ---- the failure, as the student reads it ----------------------------------------------

    def teaching_message(self, reported=""):
        lines = [
            f"This test did not finish within {self.limit:g} s, the grader's time limit for one "
            f"test, so the grader stopped it and the programs it had started.",
            "Each step of a test normally waits with a deadline of its own, far shorter, and says "
            "what it expected. This wait had none: most likely your program stopped answering "
            "(a lock never released? a thread waiting for itself?), or the machine was extremely "
            "overloaded.",
        ]
        if self.where:
            lines.append("When time ran out, the test was here:")
            for entry in self.where:
                lines.append(f"  {_short(entry.filename)}:{entry.lineno} in {entry.name}")
                if entry.line:
                    lines.append(f"    {entry.line}")
        reported = reported.strip()
        if reported and reported != INTERRUPTED:
            lines.append("What the test reported once it was stopped (its programs had been "
                         "stopped, so this may be a consequence, not the cause):")
            lines.extend("  " + line for line in reported.splitlines())
        return "\n".join(lines)

    # ---- the last resort ----------------------------------------------------------------------

    def _end_the_run(self):
        """The test cannot be interrupted: write the grades, then end the run (os._exit)."""
        with self.lock:
            if self.over.is_set():
                return
            self.over.set()  # the test's own end, if it ever comes, will find the run over
            config, item = self.item.config, self.item
            try:
                process.stop_all_programs()
                capture = config.pluginmanager.getplugin("capturemanager")
                if capture is not None:
                    capture.suspend_global_capture(in_=True)
                stuck = (f"{self.teaching_message()}\nThe test could not be interrupted, so the "
                         f"grader ended the whole run {last_resort_after(self.limit):g} s later: "
                         f"the tests after it were not run.")
                _report_failed(item, stuck, started=True)
                for later in _tests_after(item):
                    _report_failed(later, f"Not run: the run was stopped after {item.nodeid} "
                                          f"could not be interrupted at its time limit.")
                item.session.testsfailed += 1
                _write_stacks(config)
                config.hook.pytest_sessionfinish(session=item.session, exitstatus=EXIT_STATUS)
            except Exception:  # the run ends regardless: say what went wrong, on stderr
                traceback.print_exc()
            finally:
                process.stop_all_programs()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(EXIT_STATUS)


def _report_failed(item, message, started=False):
    """Tell every plugin (the grades, the terminal) that `item` failed, as pytest itself would."""
    report = pytest.TestReport(nodeid=item.nodeid, location=item.location,
                               keywords={name: 1 for name in item.keywords}, outcome="failed",
                               longrepr=message, when="call", sections=[], duration=0.0)
    hook = item.config.hook
    if not started:
        hook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    hook.pytest_runtest_logreport(report=report)
    hook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)


def _tests_after(item):
    items = list(getattr(item.session, "items", []))
    return items[items.index(item) + 1:] if item in items else []


def _write_stacks(config):
    """For the course's maintainers: where every thread was when the run was ended."""
    writer = config.get_terminal_writer()
    writer.line()
    writer.sep("+", "grader watchdog: a test could not be interrupted; the run ends here")
    for ident, frame in sys._current_frames().items():
        if ident == threading.get_ident():
            continue
        names = [thread.name for thread in threading.enumerate() if thread.ident == ident]
        writer.sep("~", f"stack of {names[0] if names else ident}")
        writer.write("".join(traceback.format_stack(frame)))
    writer.sep("+", "end of the stacks")


def _short(filename):
    """A path relative to the course (or the current folder), to keep the message short."""
    path = Path(filename)
    for base in (Path(process.__file__).resolve().parents[2], Path.cwd()):
        try:
            return str(path.resolve().relative_to(base))
        except ValueError:
            continue
    return filename
