"""Built-in script isolation-control: isolates this endpoint, lifts its isolation, or reports it, through the
agent (active_response.isolate() / unisolate() / isolation_status()), so the agent's own firewall backend
does the work: nftables on Linux, Windows Firewall (netsh) on Windows, with the broker kept reachable and
the result read back before it is reported. Changes the endpoint (isolate, unisolate).

Parameters: action (required) - isolate, unisolate or status.
"""

import json
import sys

import active_response as ar


def main():
    action = ar.params()["action"]
    try:
        if action == "isolate":
            result = ar.isolate()
        elif action == "unisolate":
            result = ar.unisolate()
        else:
            result = ar.isolation_status()
    except ar.HelperError as e:
        print("%s failed: %s" % (action, e), file=sys.stderr)
        return 1
    isolated = result.get("isolated")
    how = result.get("mechanism")
    words = {True: "isolated from the network", False: "not isolated"}.get(isolated, "isolation unknown")
    extra = " (dry run: nothing was changed on this host)" if result.get("dryRun") else ""
    print("%s: %s%s%s" % (action, words, " via %s" % how if how else "", extra))
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
