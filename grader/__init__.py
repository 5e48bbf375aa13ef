"""The course's grader: what is graded, how a submission is taken in, and how its programs run.

- course.py   the stages, read from course.toml at the top of the repository
- plugin.py   the pytest plugin (always loaded once the course is installed):
              --impl, --grade-json, points, scoreboard, results.json
- intake.py   copies exactly the program files a stage lists out of a submission
- launch.py   starts one student program with resource limits, and reaps all it started
"""
