"""Running a user's code in a child process, so that nothing it does can end or fool the caller.

`run_isolated(prepare, jobs, timeout)` starts a child process (forked where the platform can,
else spawned: then `prepare` must be picklable), runs `prepare()` there (importing the user's
module, a first call) and then `call(job)` for each job, and sends every result back through a
pipe. Every way the user's code can end other than returning becomes a result the caller sees:

  an exception, sys.exit() or KeyboardInterrupt raised in a call   -> that job's error
  the process ending (os._exit, a crash, a signal) during a job    -> that job's error; a fresh
                                                                      child runs the rest
  a job running past `timeout` seconds                             -> that job's error; the
                                                                      child is killed and the
                                                                      remaining jobs not run
  any of these in `prepare` (while importing, detecting)           -> InputError

The child ignores SIGINT: a Ctrl-C reaches the caller, which kills the child on its way out.
Threat model: mistakes in the user's code (an exit, a crash, a hang, writing into its
inputs), not a hostile program: the child runs with the caller's rights, and can write files,
signal its parent or fork processes of its own.
"""
from __future__ import annotations

import multiprocessing as mp
import signal
from typing import Any, Callable

from ..errors import InputError

__all__ = ["run_isolated", "describe_exit"]


def describe_exit(exc: BaseException) -> str:
    """What a BaseException raised by the user's code says, in one line."""
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r})"
    if isinstance(exc, KeyboardInterrupt):
        return "raised KeyboardInterrupt"
    return f"{type(exc).__name__}: {exc}"


def _child(prepare, jobs, start, conn) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        info, call = prepare()
    except InputError as exc:
        conn.send(("fatal", str(exc)))
        return
    except BaseException as exc:  # noqa: BLE001 - whatever the user's module does
        conn.send(("fatal", describe_exit(exc)))
        return
    conn.send(("ready", info))
    for i in range(start, len(jobs)):
        try:
            result = ("ok", call(jobs[i]))
        except BaseException as exc:  # noqa: BLE001
            result = ("error", describe_exit(exc))
        conn.send(("result", i, result))
    conn.send(("done",))


def _status(code: int | None) -> str:
    if code is None:
        return "did not end"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _context():
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else "spawn")


def run_isolated(prepare: Callable[[], tuple[Any, Callable]], jobs: list,
                 timeout: float | None) -> tuple[Any, list[tuple[str, Any]]]:
    """(info from prepare, one ("ok", value) or ("error", message) per job); see the module
    docstring. `timeout`: seconds for `prepare` and for each job (None: no limit)."""
    ctx = _context()
    results: list = [None] * len(jobs)
    info, start = None, 0
    while True:
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(prepare, jobs, start, send), daemon=True)
        proc.start()
        send.close()
        ready, nxt = False, start
        try:
            while True:
                if not recv.poll(timeout):
                    what = f"timed out after {timeout:g} s"
                    if not ready:
                        raise InputError(f"importing the function or its first call {what}")
                    results[nxt] = ("error", what)
                    for k in range(nxt + 1, len(jobs)):
                        results[k] = ("error", f"not run: an earlier case {what}")
                    return info, results
                try:
                    msg = recv.recv()
                except EOFError:  # the process ended without saying why
                    proc.join(5)
                    status = _status(proc.exitcode)
                    if not ready:
                        raise InputError(f"the process running the function {status} while "
                                         f"importing it or calling it the first time") from None
                    results[nxt] = ("error", f"the process {status} during this case")
                    start = nxt + 1
                    break
                if msg[0] == "fatal":
                    raise InputError(msg[1])
                if msg[0] == "ready":
                    ready, info = True, msg[1]
                elif msg[0] == "result":
                    results[msg[1]] = msg[2]
                    nxt = msg[1] + 1
                else:  # done
                    return info, results
        finally:
            recv.close()
            if proc.is_alive():
                proc.kill()
            proc.join()
        if start >= len(jobs):
            return info, results
