"""A resident worker for local runs (stdlib only, outside the fishid package: the script each
job starts imports it, and must stay light): one process imports PyTorch and the other heavy libraries
once, and each rule's `fishid` command runs in a child forked from it.

Why: on a laptop every job otherwise spends about 5 CPU-seconds starting Python and importing
torch, torchvision, scikit-learn and matplotlib before it does anything; the demo's 66 jobs
spent about a third of their CPU time so. The Snakefile starts the worker (`onstart`) only for
local execution without conda or containers, and sets FISHID_WORKER for the jobs; a cluster's
jobs run on other machines and start as before.

The job's command line (`python workflow/fishid_step.py STEP ...`) stays what Snakemake runs:
that script hands its arguments, working folder, environment and standard streams to the
worker (`forward`) and exits with the child's status. The child is the job: it gets
those streams, that folder and environment, the job's thread count (Snakemake's
OMP_NUM_THREADS, applied to torch and every BLAS and OpenMP library already loaded), and a
fresh import of the fishid package, so it runs this checkout's code as it is now.

What the worker changes for the user: a job's benchmark file measures the forwarding script,
not the job (the child is the worker's, not the script's). Each job's log ends with the
child's own CPU time and peak memory instead; FISHID_RESIDENT_WORKER=0 runs every job as its
own process, as a cluster does.
"""

import importlib
import json
import os
import resource
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

# What the steps import that costs seconds; the fishid package itself is imported afresh in
# each child. Imported here once, before any thread pool or CUDA context exists, so a fork is safe.
PRELOAD = (
    "numpy",
    "pandas",
    "PIL.Image",
    "scipy.stats",
    "torch",
    "torchvision",
    "sklearn.metrics",
    "sklearn.manifold",
    "sklearn.linear_model",
    "sklearn.model_selection",
    "matplotlib.pyplot",
)
ADDRESS = "FISHID_WORKER"  # the variable that tells a job where the worker listens
HEADER = struct.Struct("!I")
STATUS = struct.Struct("!i")
STREAMS = 3  # stdin, stdout, stderr


def wanted(environ) -> bool:
    return environ.get("FISHID_RESIDENT_WORKER", "1") != "0"


def request_bytes(entry: str, argv, cwd, environ) -> bytes:
    body = json.dumps({"entry": entry, "argv": list(argv), "cwd": str(cwd), "env": dict(environ)}).encode()
    return HEADER.pack(len(body)) + body


def forward(entry: str, argv: list[str], environ=os.environ) -> int | None:
    """Run `entry` ("module:function", called with `argv`) in the worker that FISHID_WORKER names,
    with this process's folder, environment and streams: the job's exit status, or None where
    there is no worker or it cannot be reached (the caller then runs the job itself)."""
    address = environ.get(ADDRESS)
    if not address:
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(address)
            request = request_bytes(entry, argv, os.getcwd(), environ)
            socket.send_fds(conn, [request[: HEADER.size]], [0, 1, 2])
            conn.sendall(request[HEADER.size :])
            status = conn.recv(STATUS.size, socket.MSG_WAITALL)
    except OSError as error:
        print(f"fishid: the resident worker at {address} is not reachable ({error}); running here", file=sys.stderr)
        return None
    if len(status) != STATUS.size:
        print("fishid: the resident worker went away during the job", file=sys.stderr)
        return 1
    return STATUS.unpack(status)[0]


def read_request(conn) -> tuple[dict, list[int]]:
    """The request and the job's three streams, as the client sent them (forward)."""
    head, fds, _, _ = socket.recv_fds(conn, HEADER.size, STREAMS)
    if len(head) < HEADER.size:
        head += _read_exactly(conn, HEADER.size - len(head))
    (size,) = HEADER.unpack(head)
    if len(fds) != STREAMS:
        raise ValueError(f"expected {STREAMS} streams with the request, got {len(fds)}")
    return json.loads(_read_exactly(conn, size)), fds


def _read_exactly(conn, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = conn.recv(min(left, 1 << 16))
        if not chunk:
            raise ConnectionError("the client left before its request was whole")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def exit_status(wait_status: int) -> int:
    """As a shell reports it: the exit code, or 128 + the signal that ended the child."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.waitstatus_to_exitcode(wait_status)


def run_job(request: dict, fds: list[int]) -> int:
    """In the forked child: become the job, run its command, return its exit status."""
    os.setpgid(0, 0)  # its own group, so that ending it ends whatever it started too
    # As a fresh Python sets them (SIGPIPE stays ignored, as Python leaves it).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for target, fd in enumerate(fds):  # each fd is above 2: the worker's own 0, 1 and 2 are open
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ.pop(ADDRESS, None)
    _apply_thread_count(os.environ.get("OMP_NUM_THREADS"))
    sys.argv = [sys.argv[0], *request["argv"]]
    # This checkout's code as it is now, not as it was when the worker started.
    for name in [m for m in sys.modules if m == "fishid" or m.startswith("fishid.")]:
        del sys.modules[name]
    started = time.time()
    try:
        module, function = request["entry"].split(":")
        getattr(importlib.import_module(module), function)(request["argv"])
        status = 0
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
    except BaseException:
        import traceback

        traceback.print_exc()
        status = 1
    torch = sys.modules.get("torch")
    own, helpers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + helpers.ru_utime + helpers.ru_stime
    print(
        f"fishid worker: the job ran in a child of the resident worker: {time.time() - started:.1f} s, "
        f"{cpu:.1f} CPU-s, torch threads {torch.get_num_threads() if torch else '-'}, peak resident memory "
        f"{max(own.ru_maxrss, helpers.ru_maxrss) / 1024:.0f} MB (with the pages it shares with the worker)",
        file=sys.stderr,
    )
    return status


def _apply_thread_count(value):
    """Snakemake gives each job its threads through OMP_NUM_THREADS and the BLAS variables, which
    the libraries read when they load: in the worker that was before this job existed."""
    if not value or not value.isdigit():
        return
    import threadpoolctl

    threadpoolctl.threadpool_limits(int(value))
    if "torch" in sys.modules:  # else the job's own import of it reads the variable
        sys.modules["torch"].set_num_threads(int(value))


def serve(address: str, preload=PRELOAD) -> None:
    """Accept jobs at the Unix socket `address` until stopped (SIGTERM) or until the process that
    started it (Snakemake) is gone; a client that disconnects takes its child with it."""
    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Named `address` only once it listens: a job that finds the name can connect.
    listener.bind(address + ".part")
    listener.listen(256)
    os.rename(address + ".part", address)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    children: dict[int, tuple[socket.socket, list[str]]] = {}  # pid: the client, the job's arguments
    try:
        # Jobs that arrive meanwhile start between two imports (never during one): the first
        # steps of a run (listing, fetching) need no PyTorch and need not wait for it.
        started = time.monotonic()
        for name in preload:
            importlib.import_module(name)
            sys.stdout.flush()
            sys.stderr.flush()
            _serve(listener, selector, children, timeout=0)
        print(json.dumps({"preloaded": list(preload), "seconds": round(time.monotonic() - started, 1)}), flush=True)
        while os.getppid() == parent:
            _serve(listener, selector, children, timeout=0.2)
    finally:
        for pid in children:
            _end_group(pid)
        if os.path.exists(address):
            os.unlink(address)


def _serve(listener, selector, children, timeout):
    for key, _ in selector.select(timeout=timeout):
        if key.fileobj is listener:
            conn, _ = listener.accept()
            started = _start(conn, listener, children)
            if started:
                pid, argv = started
                children[pid] = conn, argv
                selector.register(conn, selectors.EVENT_READ, pid)
        else:
            # A client sends nothing after its request: readable means it is gone.
            selector.unregister(key.fileobj)
            _end_group(key.data)
    _reap(children, selector)


def _start(conn, listener, children) -> tuple[int, list[str]] | None:
    try:
        request, fds = read_request(conn)
    except (OSError, ValueError) as error:
        print(f"fishid worker: a request was refused: {error}", file=sys.stderr)
        conn.close()
        return None
    pid = os.fork()
    if pid == 0:
        listener.close()
        for other, _ in children.values():
            other.close()
        conn.close()
        status = 1
        try:
            status = run_job(request, fds)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    for fd in fds:
        os.close(fd)
    return pid, request["argv"]


def _reap(children, selector):
    while children:
        pid, wait_status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        if pid not in children:
            continue
        conn, argv = children.pop(pid)
        if conn in selector.get_map():
            selector.unregister(conn)
        status = exit_status(wait_status)
        # One line per job in the worker's log (.snakemake/log/fishid-worker.log): what ran here;
        # the only other line says when its imports were done.
        print(json.dumps({"pid": pid, "argv": argv, "status": status}), flush=True)
        try:
            conn.sendall(STATUS.pack(status))
        except OSError:
            pass  # the client is gone; so is its job
        conn.close()


def _end_group(pid: int):
    # Before the child has made its own group, only the child itself exists to end.
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
            return
        except ProcessLookupError:
            continue


def start(address: str, python: str, log) -> subprocess.Popen:
    """The worker, once it listens at `address` (it binds before its imports: a fraction of a second)."""
    environ = {k: v for k, v in os.environ.items() if k != ADDRESS}
    process = subprocess.Popen(
        [python, __file__, address], env=environ, stdin=subprocess.DEVNULL, stdout=log, stderr=log
    )
    deadline = time.monotonic() + 30
    while not os.path.exists(address) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return process


def start_for_jobs(python: str, log_path: str) -> subprocess.Popen | None:
    """A worker for the jobs this process starts from now on (it sets their FISHID_WORKER), unless
    FISHID_RESIDENT_WORKER=0 says not to."""
    if not wanted(os.environ):
        return None
    address = os.path.join(tempfile.mkdtemp(prefix="fishid-worker-"), "socket")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "ab") as log:
        process = start(address, python, log)
    os.environ[ADDRESS] = address
    return process


def stop_for_jobs(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait()
    os.rmdir(os.path.dirname(os.environ.pop(ADDRESS)))


if __name__ == "__main__":
    serve(sys.argv[1])
