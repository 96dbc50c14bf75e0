"""Runs one Active Response script for the agent and records how it ended, so the result outlives the agent.

Usage: python3 script_runner.py RUN_DIR SCRIPT TIMEOUT_SECONDS MAX_OUTPUT_BYTES

The agent starts this runner in a session of its own, writes the runner's pid and start time to its journal,
and only then writes "go" on the runner's stdin. Without "go" (the agent died first, or could not write its
journal) the runner exits and the script never starts: a script never runs unless the journal knows its
process.

The runner writes the script's stdout and stderr (each capped at MAX_OUTPUT_BYTES) to RUN_DIR/stdout and
RUN_DIR/stderr, kills the script's whole process group at the time limit, and records the end in
RUN_DIR/status.json. The agent preallocated that file, and it is rewritten in place, so recording the end
needs no new disk space. Its states:

  prepared     written by the agent; the runner has not been told to start the script
  starting     the runner got "go" and is about to start the script
  running      the script runs (scriptPid)
  finished     exitCode or signal, timedOut, timeoutMs, durationMs, stdoutTruncated, stderrTruncated, outputLost
  not_started  the script could not be started (error)

Once it has "go", the runner depends on nothing of the agent: its own stdio is /dev/null, so the agent's
death cannot break it.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

STATUS_BYTES = 4096


def write_status(run_dir, status):
    data = json.dumps(status).encode("utf-8")
    if len(data) > STATUS_BYTES:
        status = dict(status, error=str(status.get("error", ""))[:1000])
        data = json.dumps(status).encode("utf-8")
    fd = os.open(os.path.join(run_dir, "status.json"), os.O_WRONLY)
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        write_all(fd, data.ljust(STATUS_BYTES, b" "))
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Capture(threading.Thread):
    """Copies one of the script's pipes to a file, keeping at most `limit` bytes and draining the rest."""

    def __init__(self, pipe, path, limit):
        super().__init__(daemon=True)
        self.pipe = pipe
        self.path = path
        self.limit = limit
        self.size = 0
        self.truncated = False
        self.lost = False

    def run(self):
        try:
            out = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except OSError:
            out, self.lost = None, True
        src = self.pipe.fileno()
        while True:
            try:
                chunk = os.read(src, 65536)
            except OSError:
                break
            if not chunk:
                break
            take = chunk[: max(0, self.limit - self.size)]
            if len(take) < len(chunk):
                self.truncated = True
            if not take:
                continue
            self.size += len(take)
            if out is not None and not self.lost:
                try:
                    write_all(out, take)
                except OSError:
                    # A full disk: the rest of the output is lost, the script keeps running.
                    self.lost = True
        if out is not None:
            try:
                os.fsync(out)
            except OSError:
                self.lost = True
            os.close(out)


def kill_group(proc):
    try:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except OSError:
        pass


def main():
    run_dir, script, timeout, limit = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    if sys.stdin.readline().strip() != "go":
        return 3
    # From here on the agent may die at any moment: nothing may depend on its pipes.
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    try:
        write_status(run_dir, {"state": "starting"})
    except OSError:
        return 4  # still "prepared": the script never started, and the agent says so
    options = {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    if os.name == "posix":
        options["start_new_session"] = True  # its own process group, killed whole at the time limit
    else:
        options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
    started = time.monotonic()
    try:
        proc = subprocess.Popen([sys.executable, script], **options)
    except OSError as e:
        write_status(run_dir, {"state": "not_started", "error": "python could not start the script: %s" % e})
        return 0
    try:
        write_status(run_dir, {"state": "running", "scriptPid": proc.pid})
    except OSError:
        pass  # "starting" already says the script may be running
    captures = [
        Capture(proc.stdout, os.path.join(run_dir, "stdout"), limit),
        Capture(proc.stderr, os.path.join(run_dir, "stderr"), limit),
    ]
    for c in captures:
        c.start()
    timed_out = False
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_group(proc)
        code = proc.wait()
    # A child the script left behind may hold its pipes open; its output is not worth waiting for.
    for c in captures:
        c.join(2)
    if code < 0:
        try:
            sig = signal.Signals(-code).name
        except ValueError:
            sig = "signal %d" % -code
        exit_code = None
    else:
        sig, exit_code = None, code
    write_status(
        run_dir,
        {
            "state": "finished",
            "exitCode": exit_code,
            "signal": sig,
            "timedOut": timed_out,
            "timeoutMs": round(timeout * 1000),
            "durationMs": round((time.monotonic() - started) * 1000),
            "stdoutTruncated": captures[0].truncated,
            "stderrTruncated": captures[1].truncated,
            "outputLost": captures[0].lost or captures[1].lost,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
