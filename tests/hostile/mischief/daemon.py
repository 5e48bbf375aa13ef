import os
import sys

MARKER = "threaded-chat-hostile-daemon"


def mischief():
    """Leave a daemon behind: double fork, new session, emptied environment, own argv."""
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execve(sys.executable, [sys.executable, "-c", "import time\nwhile True: time.sleep(1)",
                                       MARKER], {})
        os._exit(0)
