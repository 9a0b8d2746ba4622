"""Updraft's entry point of Pythonic EMR Serverless job runs: EMR Serverless runs a Spark job from one
Python file, so this file is the job's entry point and the task's command comes as its arguments
(`pyflyte-execute …` or `pyflyte-fast-execute …`). It runs that command and exits with its code; the
task's outcome is what the command leaves at its output prefix (outputs.pb, error.pb)."""

import signal
import subprocess
import sys

if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("updraft entry point: no command to run")
    child = subprocess.Popen(sys.argv[1:])
    signal.signal(signal.SIGTERM, lambda s, _f: child.send_signal(s))
    sys.exit(child.wait())
