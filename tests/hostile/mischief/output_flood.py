import sys
import threading


def mischief():
    """200 MB on standard error, from a thread, while the server works."""
    def flood():
        line = "flood " * 100 + "\n"
        for _ in range(200 * 1024 * 1024 // len(line)):
            sys.stderr.write(line)
        sys.stderr.flush()
    threading.Thread(target=flood, daemon=True).start()
