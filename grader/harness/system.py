"""What the harness asks of the operating system beyond Python's own modules.

- Windows: a Job Object per program (`Job`), so that stopping the program stops
  everything it started, and so that nothing it started outlives the test run: the
  job is made with "kill on job close", and its only handle is the harness's, which
  Windows closes when the harness exits, however it exits. Programs are started
  suspended and put in their job before they run a single instruction (`resume`),
  so that not even their first child escapes.
- The measures some tests take of a program: its CPU time (`cpu_seconds`) and its
  peak memory (`peak_memory_kb`). Linux reads /proc; Windows asks the job (or the
  process); macOS has `ps` for the CPU time, and no peak memory that the standard
  library can read without guessing at a private structure, so None there.

Every function returns None (or raises OSError, where the harness has a fallback)
rather than guess: a test that gets None says the measure is not available here.
Only the standard library (ctypes) is used; the programs under test never see this.
"""

import ctypes
import os
import re
import subprocess
import sys
from pathlib import Path

IS_WINDOWS = sys.platform == "win32"

# ---- Windows: structures and constants (defined everywhere, so that their sizes are checked on Linux) ----

JOB_OBJECT_LIMIT_PROCESS_MEMORY = 0x0100
JOB_OBJECT_LIMIT_DIE_ON_UNHANDLED_EXCEPTION = 0x0400  # a crash ends the program, with no dialog waiting
JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x2000
JOB_OBJECT_BASIC_ACCOUNTING_INFORMATION = 1
JOB_OBJECT_EXTENDED_LIMIT_INFORMATION = 9
CREATE_SUSPENDED = 0x00000004
TH32CS_SNAPTHREAD = 0x00000004
THREAD_SUSPEND_RESUME = 0x0002
PROCESS_TERMINATE = 0x0001
PROCESS_SET_QUOTA = 0x0100
PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
SYNCHRONIZE = 0x00100000
WAIT_TIMEOUT = 0x00000102
INVALID_HANDLE_VALUE = ctypes.c_void_p(-1).value
# The same ceiling as the launcher's RLIMIT_AS on POSIX (grader/launch.py).
PROCESS_MEMORY_LIMIT = 6 * 1024 ** 3
HUNDRED_NS = 1e-7  # Windows counts CPU time in units of 100 ns


class JobBasicLimits(ctypes.Structure):  # JOBOBJECT_BASIC_LIMIT_INFORMATION
    _fields_ = [("PerProcessUserTimeLimit", ctypes.c_int64),
                ("PerJobUserTimeLimit", ctypes.c_int64),
                ("LimitFlags", ctypes.c_uint32),
                ("MinimumWorkingSetSize", ctypes.c_size_t),
                ("MaximumWorkingSetSize", ctypes.c_size_t),
                ("ActiveProcessLimit", ctypes.c_uint32),
                ("Affinity", ctypes.c_size_t),
                ("PriorityClass", ctypes.c_uint32),
                ("SchedulingClass", ctypes.c_uint32)]


class IoCounters(ctypes.Structure):  # IO_COUNTERS
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "ReadOperationCount", "WriteOperationCount", "OtherOperationCount",
        "ReadTransferCount", "WriteTransferCount", "OtherTransferCount")]


class JobExtendedLimits(ctypes.Structure):  # JOBOBJECT_EXTENDED_LIMIT_INFORMATION
    _fields_ = [("BasicLimitInformation", JobBasicLimits),
                ("IoInfo", IoCounters),
                ("ProcessMemoryLimit", ctypes.c_size_t),
                ("JobMemoryLimit", ctypes.c_size_t),
                ("PeakProcessMemoryUsed", ctypes.c_size_t),
                ("PeakJobMemoryUsed", ctypes.c_size_t)]


class JobAccounting(ctypes.Structure):  # JOBOBJECT_BASIC_ACCOUNTING_INFORMATION
    _fields_ = [("TotalUserTime", ctypes.c_int64),
                ("TotalKernelTime", ctypes.c_int64),
                ("ThisPeriodTotalUserTime", ctypes.c_int64),
                ("ThisPeriodTotalKernelTime", ctypes.c_int64),
                ("TotalPageFaultCount", ctypes.c_uint32),
                ("TotalProcesses", ctypes.c_uint32),
                ("ActiveProcesses", ctypes.c_uint32),
                ("TotalTerminatedProcesses", ctypes.c_uint32)]


class ThreadEntry(ctypes.Structure):  # THREADENTRY32
    _fields_ = [("dwSize", ctypes.c_uint32),
                ("cntUsage", ctypes.c_uint32),
                ("th32ThreadID", ctypes.c_uint32),
                ("th32OwnerProcessID", ctypes.c_uint32),
                ("tpBasePri", ctypes.c_int32),
                ("tpDeltaPri", ctypes.c_int32),
                ("dwFlags", ctypes.c_uint32)]


class FileTime(ctypes.Structure):  # FILETIME
    _fields_ = [("low", ctypes.c_uint32), ("high", ctypes.c_uint32)]

    def seconds(self):
        return ((self.high << 32) | self.low) * HUNDRED_NS


class ProcessMemoryCounters(ctypes.Structure):  # PROCESS_MEMORY_COUNTERS
    _fields_ = [("cb", ctypes.c_uint32), ("PageFaultCount", ctypes.c_uint32)] + [
        (name, ctypes.c_size_t) for name in (
            "PeakWorkingSetSize", "WorkingSetSize", "QuotaPeakPagedPoolUsage", "QuotaPagedPoolUsage",
            "QuotaPeakNonPagedPoolUsage", "QuotaNonPagedPoolUsage", "PagefileUsage", "PeakPagefileUsage")]


def _kernel32():
    """kernel32 with the prototypes used here (Windows only)."""
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    handle, dword, boolean = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int
    prototypes = {
        "CreateJobObjectW": (handle, [ctypes.c_void_p, ctypes.c_wchar_p]),
        "SetInformationJobObject": (boolean, [handle, ctypes.c_int, ctypes.c_void_p, dword]),
        "QueryInformationJobObject": (boolean, [handle, ctypes.c_int, ctypes.c_void_p, dword,
                                                ctypes.POINTER(dword)]),
        "AssignProcessToJobObject": (boolean, [handle, handle]),
        "TerminateJobObject": (boolean, [handle, ctypes.c_uint]),
        "OpenProcess": (handle, [dword, boolean, dword]),
        "OpenThread": (handle, [dword, boolean, dword]),
        "ResumeThread": (dword, [handle]),
        "CloseHandle": (boolean, [handle]),
        "CreateToolhelp32Snapshot": (handle, [dword, dword]),
        "Thread32First": (boolean, [handle, ctypes.POINTER(ThreadEntry)]),
        "Thread32Next": (boolean, [handle, ctypes.POINTER(ThreadEntry)]),
        "GetProcessTimes": (boolean, [handle] + [ctypes.POINTER(FileTime)] * 4),
        "K32GetProcessMemoryInfo": (boolean, [handle, ctypes.POINTER(ProcessMemoryCounters), dword]),
        "WaitForSingleObject": (dword, [handle, dword]),
    }
    for name, (restype, argtypes) in prototypes.items():
        function = getattr(kernel32, name)
        function.restype, function.argtypes = restype, argtypes
    return kernel32


_KERNEL32 = []


def kernel32():
    if not _KERNEL32:
        _KERNEL32.append(_kernel32())
    return _KERNEL32[0]


def _windows_error(what):
    code = ctypes.get_last_error()
    return OSError(f"{what} failed: {ctypes.FormatError(code).strip()} (Windows error {code})")


class Job:
    """A Windows Job Object: a program and every process it starts, ended together.

    "Kill on job close": when the last handle to the job closes, Windows ends every
    process in it. The harness holds the only handle, so even a harness that dies
    (a crash, the last-resort os._exit of grader/watchdog.py) takes them all along.
    """

    def __init__(self):
        api = kernel32()
        self.handle = api.CreateJobObjectW(None, None)
        if not self.handle:
            raise _windows_error("CreateJobObject")
        limits = JobExtendedLimits()
        limits.BasicLimitInformation.LimitFlags = (JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
                                                   | JOB_OBJECT_LIMIT_DIE_ON_UNHANDLED_EXCEPTION
                                                   | JOB_OBJECT_LIMIT_PROCESS_MEMORY)
        limits.ProcessMemoryLimit = PROCESS_MEMORY_LIMIT
        if not api.SetInformationJobObject(self.handle, JOB_OBJECT_EXTENDED_LIMIT_INFORMATION,
                                           ctypes.byref(limits), ctypes.sizeof(limits)):
            error = _windows_error("SetInformationJobObject")
            self.close()
            raise error

    def add(self, pid):
        """Put a process in the job; the processes it starts from now on are in it too."""
        api = kernel32()
        process = api.OpenProcess(PROCESS_SET_QUOTA | PROCESS_TERMINATE, False, pid)
        if not process:
            raise _windows_error("OpenProcess")
        try:
            if not api.AssignProcessToJobObject(self.handle, process):
                raise _windows_error("AssignProcessToJobObject")
        finally:
            api.CloseHandle(process)

    def kill(self):
        """End every process in the job now."""
        if self.handle:
            kernel32().TerminateJobObject(self.handle, 1)

    def close(self):
        if self.handle:
            kernel32().CloseHandle(self.handle)
            self.handle = None

    def cpu_seconds(self):
        """User + kernel CPU time of every process that ever ran in the job."""
        info = JobAccounting()
        if not self.handle or not kernel32().QueryInformationJobObject(
                self.handle, JOB_OBJECT_BASIC_ACCOUNTING_INFORMATION, ctypes.byref(info),
                ctypes.sizeof(info), None):
            return None
        return (info.TotalUserTime + info.TotalKernelTime) * HUNDRED_NS

    def peak_memory_kb(self):
        """The most memory (committed) that any process of the job has used, in kB."""
        info = JobExtendedLimits()
        if not self.handle or not kernel32().QueryInformationJobObject(
                self.handle, JOB_OBJECT_EXTENDED_LIMIT_INFORMATION, ctypes.byref(info),
                ctypes.sizeof(info), None):
            return None
        return info.PeakProcessMemoryUsed // 1024


def resume(pid):
    """Resume every thread of a process started with CREATE_SUSPENDED (it has one).

    subprocess.Popen closes the thread handle that CreateProcess returned, so the
    threads are found with a Toolhelp snapshot: documented, and there since Windows 2000.
    """
    api = kernel32()
    snapshot = api.CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0)
    if not snapshot or snapshot == INVALID_HANDLE_VALUE:
        raise _windows_error("CreateToolhelp32Snapshot")
    resumed = 0
    try:
        entry = ThreadEntry()
        entry.dwSize = ctypes.sizeof(entry)
        more = api.Thread32First(snapshot, ctypes.byref(entry))
        while more:
            if entry.th32OwnerProcessID == pid:
                thread = api.OpenThread(THREAD_SUSPEND_RESUME, False, entry.th32ThreadID)
                if thread:
                    if api.ResumeThread(thread) != 0xFFFFFFFF:
                        resumed += 1
                    api.CloseHandle(thread)
            more = api.Thread32Next(snapshot, ctypes.byref(entry))
    finally:
        api.CloseHandle(snapshot)
    if not resumed:
        raise OSError(f"could not resume process {pid}: no thread of it was found")


def _windows_process_measure(pid, measure):
    api = kernel32()
    process = api.OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
    if not process:
        return None
    try:
        return measure(api, process)
    finally:
        api.CloseHandle(process)


def _windows_cpu(api, process):
    created, ended, kernel, user = FileTime(), FileTime(), FileTime(), FileTime()
    if not api.GetProcessTimes(process, ctypes.byref(created), ctypes.byref(ended),
                               ctypes.byref(kernel), ctypes.byref(user)):
        return None
    return kernel.seconds() + user.seconds()


def _windows_peak_memory(api, process):
    counters = ProcessMemoryCounters()
    counters.cb = ctypes.sizeof(counters)
    if not api.K32GetProcessMemoryInfo(process, ctypes.byref(counters), counters.cb):
        return None
    return counters.PeakWorkingSetSize // 1024


# ---- measures of one process, by pid ---------------------------------------------

def process_exists(pid):
    """True while the process runs (a zombie, dead but not yet collected, does not count).

    Never os.kill(pid, 0) on Windows: there, any signal but Ctrl+C and Ctrl+Break kills.
    """
    if IS_WINDOWS:
        api = kernel32()
        process = api.OpenProcess(SYNCHRONIZE | PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
        if not process:
            return False
        try:
            return api.WaitForSingleObject(process, 0) == WAIT_TIMEOUT
        finally:
            api.CloseHandle(process)
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        pass
    try:  # no /proc: ps says whether it is there, and in which state
        state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return True
    return bool(state) and not state.startswith("Z")


def cpu_seconds(pid):
    """User + system CPU time the process has used so far; None if it cannot be read."""
    if IS_WINDOWS:
        return _windows_process_measure(pid, _windows_cpu)
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    except OSError:
        pass
    except (IndexError, ValueError):
        return None
    return _ps_cpu_seconds(pid)  # no /proc: macOS, the BSDs


# [[dd-]hh:]mm:ss[.ff], as ps prints "time" (macOS: 0:01.25; procps: 00:00:01)
PS_TIME = re.compile(r"^(?:(?:(?P<days>\d+)-)?(?P<hours>\d+):)?(?P<minutes>\d+):(?P<seconds>\d+(?:\.\d+)?)$")


def parse_ps_time(text):
    match = PS_TIME.match(text.strip())
    if not match:
        return None
    days, hours = int(match["days"] or 0), int(match["hours"] or 0)
    return ((days * 24 + hours) * 60 + int(match["minutes"])) * 60 + float(match["seconds"])


def _ps_cpu_seconds(pid):
    try:
        output = subprocess.run(["ps", "-o", "time=", "-p", str(pid)], capture_output=True,
                                text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_ps_time(output) if output.strip() else None


def peak_memory_kb(pid):
    """The process's peak resident memory in kB (Linux VmHWM, Windows peak working set); else None."""
    if IS_WINDOWS:
        return _windows_process_measure(pid, _windows_peak_memory)
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None
