#!/usr/bin/env python3
"""A service manager's side of sd_notify, for tests: binds a unix datagram socket at
argv[1] and writes every notification to argv[2], one line each: milliseconds since start,
then the message with its newlines shown as '|'. When a message carries READY=1, the
command in argv[3:] (if any) runs at once and its output follows as a line
'at-ready: ...', so that a test can see what the daemon reported at that moment.
Runs until killed."""
import os
import socket
import subprocess
import sys
import time


def main():
    if len(sys.argv) < 3:
        print("usage: notify_listen.py SOCKET LOG [COMMAND...]", file=sys.stderr)
        return 2
    path, log_path, at_ready = sys.argv[1], sys.argv[2], sys.argv[3:]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock.bind(path)
    t0 = time.monotonic()
    with open(log_path, "a", buffering=1) as log:
        log.write("listening\n")
        while True:
            msg = sock.recv(4096).decode("utf-8", "replace")
            ms = (time.monotonic() - t0) * 1000.0
            log.write("%.1f %s\n" % (ms, msg.strip().replace("\n", "|")))
            if at_ready and "READY=1" in msg.split("\n"):
                r = subprocess.run(at_ready, capture_output=True, text=True)
                out = (r.stdout + r.stderr).strip().replace("\n", "|")
                log.write("at-ready: rc=%d %s\n" % (r.returncode, out))


if __name__ == "__main__":
    sys.exit(main())
