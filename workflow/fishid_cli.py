"""What the rules run: started as a script, this file puts workflow/ on sys.path, so every
job uses the fishid package of this checkout, in whatever environment (venv, conda) it runs.

Where Snakemake started a resident worker for a local run (fishid_worker.py; FISHID_WORKER names it),
the command runs in a child of that worker, which has PyTorch imported already: this script
then only hands over its arguments, folder, environment and streams, importing nothing heavy.
"""

import os
import sys


def forward(address: str, argv: list[str]) -> int | None:
    """The job's exit status from the worker at `address`, or None where it cannot be reached
    (the job then runs here, as without a worker)."""
    import socket

    from fishid_worker import STATUS, request_bytes

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(address)
            request = request_bytes(argv, os.getcwd(), os.environ)
            socket.send_fds(conn, [request[:4]], [0, 1, 2])
            conn.sendall(request[4:])
            status = conn.recv(STATUS.size, socket.MSG_WAITALL)
    except OSError as error:
        print(f"fishid: the resident worker at {address} is not reachable ({error}); running here", file=sys.stderr)
        return None
    if len(status) != STATUS.size:
        print("fishid: the resident worker went away during the job", file=sys.stderr)
        return 1
    return STATUS.unpack(status)[0]


if __name__ == "__main__":
    address = os.environ.get("FISHID_WORKER")
    status = forward(address, sys.argv[1:]) if address else None
    if status is not None:
        sys.exit(status)
    from fishid.cli import main

    main()
