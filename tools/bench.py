"""The simulated board's bench port from the command line (no nc needed).

    python3 tools/bench.py PORT CMD [KEY=VALUE ...]     one request, its reply printed
    python3 tools/bench.py PORT '{"cmd": "car", "want": true}'    a raw JSON request

VALUE is read as JSON when it is JSON (true, 16, 0.9, "x"), else as text: so
`car want=false demand_a=16`, `fault name=estop on=true`, `mains v=250`, `temp c=90`,
`speed x=10`, `status`, `state`, `events since=0`.  The reply is one JSON object,
{"ok": true, ...} or {"ok": false, "error": ...}; the exit status is 1 when it is not ok.
The commands are in README.md ("The bench port").
"""
import json
import socket
import sys


def request(argv):
    """The request object for the command-line words after PORT."""
    if len(argv) == 1 and argv[0].lstrip().startswith("{"):
        return json.loads(argv[0])
    req = {"cmd": argv[0]}
    for word in argv[1:]:
        key, eq, value = word.partition("=")
        if not eq:
            raise ValueError("%r: expected KEY=VALUE" % word)
        try:
            req[key] = json.loads(value)
        except ValueError:
            req[key] = value
    return req


def send(port, req, host="127.0.0.1", timeout=5):
    """One bench request (a dict, or a line of text as it is) to host:port; the reply."""
    line = req if isinstance(req, (str, bytes)) else json.dumps(req)
    if isinstance(line, str):
        line = line.encode()
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(line.rstrip(b"\n") + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or not argv[0].isdigit():
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        reply = send(int(argv[0]), request(argv[1:]))
    except (OSError, ValueError) as e:
        print("bench: %s" % e, file=sys.stderr)
        return 2
    print(json.dumps(reply, indent=1, sort_keys=True))
    return 0 if reply.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
