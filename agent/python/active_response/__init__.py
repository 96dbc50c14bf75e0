"""Helper module for Active Response scripts.

A script run by the agent can import this module to talk back to the agent that runs it:

    import active_response as ar
    params = ar.params()                 # the validated parameters of this run
    info = ar.upload_file("/var/log/x")  # -> {"fileId", "size", "sha256"}
    ar.download_file("tool.bin", "/tmp/tool.bin")  # a library file, by name or SHA-256
    ar.isolate(); ar.unisolate()
    ar.isolation_status()                # {"isolated", "changedAt", "dryRun"}: what the agent last applied
    for p in ar.processes():             # [{"pid", "name", "cmdline"}], what the agent may see
        print(p["pid"], p["name"])
    ar.progress("half way")

It talks to the agent over the Unix socket named in AR_HELPER_SOCKET (one JSON object per line), which
exists only while the script runs.
"""

import itertools
import json
import os
import socket

__all__ = [
    "params",
    "upload_file",
    "download_file",
    "isolate",
    "unisolate",
    "isolation_status",
    "processes",
    "progress",
    "HelperError",
]

_ids = itertools.count(1)


class HelperError(RuntimeError):
    """The agent refused or failed a helper request."""


def _call(op, **args):
    path = os.environ.get("AR_HELPER_SOCKET")
    if not path:
        raise HelperError("not running under the Active Response agent (AR_HELPER_SOCKET is not set)")
    req_id = next(_ids)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.sendall((json.dumps({"id": req_id, "op": op, "args": args}) + "\n").encode("utf-8"))
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                raise HelperError("the agent closed the helper connection")
            buf += chunk
    reply = json.loads(buf.decode("utf-8"))
    if not reply.get("ok"):
        raise HelperError(reply.get("error", "helper request failed"))
    return reply.get("result", {})


def params():
    """The parameters of this run, validated by the platform against the script's declared schema."""
    return json.loads(os.environ.get("AR_PARAMS", "{}"))


def upload_file(path, name=None):
    """Uploads a file from this endpoint to the platform's evidence store. Returns fileId, size, sha256."""
    return _call("upload", path=os.path.abspath(path), name=name)


def download_file(ref, dest):
    """Downloads a library file (by name or SHA-256) to dest, verified and written atomically."""
    return _call("download", ref=ref, dest=os.path.abspath(dest))


def isolate():
    """Isolates this endpoint from the network (the broker stays reachable)."""
    return _call("isolate")


def unisolate():
    """Lifts network isolation."""
    return _call("unisolate")


def isolation_status():
    """Whether the agent has this endpoint isolated, as it last applied it (agent 1.5.0 or newer)."""
    return _call("isolation")


def processes(match=None):
    """The processes the agent may see (all of them, or only the sandbox's for a dry-run agent)."""
    args = {"match": str(match)} if match else {}
    return _call("processes", **args).get("processes", [])


def progress(message):
    """Sends a progress note to the platform."""
    return _call("progress", message=str(message)[:4000])
