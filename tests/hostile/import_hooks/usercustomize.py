# Would run at the start of any Python that has this folder on its path.
import os
os.environ["THREADED_CHAT_HOSTILE_HOOK"] = "usercustomize ran"
raise SystemExit("usercustomize.py of a submission ran: the grader imported submission code")
