# A warm worker for `updraft run`: imports flytekit once, then runs each task in a process forked from
# itself, so no task pays for a fresh interpreter and flytekit's import.
#
# Run as `python -u -c <this file>`. It speaks JSON lines with its parent (the local connector):
#   request  {"id": n, "argv": [...], "env": {...}, "cwd": "...", "stdout": "...", "stderr": "..."}
#   reply    {"id": n, "pid": p}            the task runs as process p (its own process group)
#            {"id": n, "refused": "why"}    the connector starts a process instead
#   event    {"exit": p, "code": c} or {"exit": p, "signal": s}, once process p ended
# The first line it writes says it is ready:
#   {"ready": {"python": ..., "preloaded": [modules], "errors": [...], "threads": n}}
#
# A task's process is the same as `pyflyte-execute …` started on its own would be: its own process
# group (so killing the group kills what it started), stdin from /dev/null, stdout and stderr to the
# attempt's files, exactly the environment given, the working folder given, `sys.argv` as given, and
# `sys.path` as that interpreter would have it for that environment. It runs the console script named by
# argv[0] (found in this environment's entry points) and exits with its exit code.

import gc
import json
import os
import select
import signal
import sys
import traceback

# The protocol's ends, kept away from fds 0-2, which each task gets for itself.
PROTO_IN = os.dup(0)
PROTO_OUT = os.dup(1)
os.set_inheritable(PROTO_IN, False)
os.set_inheritable(PROTO_OUT, False)
_null = os.open(os.devnull, os.O_RDWR)
os.dup2(_null, 0)
os.dup2(2, 1)  # anything printed by imports goes where the worker's own diagnostics go
os.close(_null)

# `-c` puts the working folder first on sys.path; a console script has its own folder there instead.
if sys.path and sys.path[0] == "":
    del sys.path[0]
BASE_PATH = list(sys.path)
BASE_PYTHONPATH = os.environ.get("PYTHONPATH", "")


def send(obj):
    data = (json.dumps(obj) + "\n").encode()
    while data:
        try:
            n = os.write(PROTO_OUT, data)
        except BrokenPipeError:  # the connector is gone
            stop_all()
            os._exit(0)
        data = data[n:]


def entry_points():
    """Console scripts of this environment, by name."""
    from importlib import metadata

    try:
        eps = metadata.entry_points(group="console_scripts")
    except TypeError:  # Python < 3.10
        eps = metadata.entry_points().get("console_scripts", [])
    return {ep.name: ep for ep in eps}


# The warm part: flytekit and its task entry points, imported once.
PRELOADED = []
ERRORS = []
for mod in ["flytekit", "flytekit.bin.entrypoint"] + [
    m for m in os.environ.get("UPDRAFT_WORKER_PRELOAD", "").split(",") if m
]:
    try:
        __import__(mod)
        PRELOADED.append(mod)
    except Exception as e:  # the task will say what is missing when it runs
        ERRORS.append(f"cannot import {mod}: {e}")
SCRIPTS = entry_points()
LOADED = {}
for name in ("pyflyte-execute", "pyflyte-map-execute"):
    if name in SCRIPTS:
        try:
            LOADED[name] = SCRIPTS[name].load()
        except Exception:
            pass

# What is imported now stays out of the collector's sight, so a task's collections do not write to
# (and copy) the pages it shares with the worker.
gc.collect()
gc.freeze()


def run_task(req, ep):
    """In the forked child: become the task's process and run it; never returns."""
    code = 1
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        # Signal handling as a new interpreter starts with it.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        os.close(PROTO_IN)
        os.close(PROTO_OUT)
        for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(f, fd)
            os.close(f)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        argv = req["argv"]
        sys.argv = list(argv)
        # sys.path as the script's interpreter would build it: the script's folder, the environment's
        # PYTHONPATH, then the interpreter's own entries.
        extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        base = [p for p in BASE_PATH if p not in BASE_PYTHONPATH.split(os.pathsep)]
        sys.path[:] = [os.path.dirname(os.path.abspath(argv[0]))] + extra + base
        reseed()
        try:
            result = ep()
            code = 0 if result is None else result
        except SystemExit as e:
            code = e.code
        if code is None:
            code = 0
        elif not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:
            import atexit

            atexit._run_exitfuncs()
        except BaseException:
            pass
        for s in (sys.stdout, sys.stderr):
            try:
                s.flush()
            except BaseException:
                pass
        os._exit(code & 0xFF if isinstance(code, int) else 1)


def reseed():
    """Random generators a forked process would otherwise share with its siblings."""
    np = sys.modules.get("numpy")
    if np is not None:
        try:
            np.random.seed()
        except Exception:
            pass


def start(req):
    argv = req.get("argv") or []
    name = os.path.basename(argv[0]) if argv else ""
    ep = LOADED.get(name)
    if ep is None:
        if name not in SCRIPTS:
            return {"refused": f"`{name}` is not a console script of this Python environment"}
        try:
            ep = SCRIPTS[name].load()
        except Exception as e:
            return {"refused": f"`{name}` cannot be loaded: {e}"}
        LOADED[name] = ep
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        run_task(req, ep)
    RUNNING.add(pid)
    return {"pid": pid}


RUNNING = set()


def stop_all():
    """The connector is gone (its process ended, however it ended): so do the tasks it started."""
    for pid in RUNNING:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass


def reap():
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        RUNNING.discard(pid)
        if os.WIFSIGNALED(status):
            send({"exit": pid, "signal": os.WTERMSIG(status)})
        else:
            send({"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def main():
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    # Ctrl-C reaches the whole foreground group; the connector decides what stops, not the terminal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import threading

    send(
        {
            "ready": {
                "python": sys.version.split()[0],
                "preloaded": PRELOADED,
                "errors": ERRORS,
                "threads": threading.active_count(),
            }
        }
    )
    buf = b""
    while True:
        try:
            ready, _, _ = select.select([PROTO_IN, wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in ready:
            try:
                os.read(wake_r, 4096)
            except BlockingIOError:
                pass
        reap()
        if PROTO_IN in ready:
            chunk = os.read(PROTO_IN, 65536)
            if not chunk:
                stop_all()
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if not line.strip():
                    continue
                try:
                    req = json.loads(line)
                    reply = start(req)
                except Exception as e:
                    req, reply = {}, {"refused": f"bad request: {e}"}
                reply["id"] = req.get("id")
                send(reply)
                reap()


main()
