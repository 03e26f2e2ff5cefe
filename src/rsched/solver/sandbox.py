"""Run one solve in a child process under memory, CPU and wall-clock limits.

The child (started with the ``spawn`` method, so it shares no state with the caller)
lowers its own ``RLIMIT_AS`` / ``RLIMIT_CPU`` and then calls :func:`rsched.solver.api.solve`
with a :class:`Control` whose hooks forward progress and checkpoints over a pipe and whose
``should_abort`` reads an event the parent sets. The parent forwards what arrives to the
caller's ``Control``, saves checkpoints, polls the caller's abort flag, enforces the wall
limit, and turns every way the child can end into a :class:`SolveResult` (or an error):

* a normal end: the child's result, whole (with the validator's report);
* abort: the child stops and returns its best solution; if it does not within
  ``abort_grace`` seconds it is terminated and the last checkpoint is returned;
* a limit (memory, CPU, wall): ``stop_reason`` RESOURCE_LIMIT, a note naming the limit,
  and the best solution known (the child's own result when it could still finish, else the
  last checkpoint, re-validated here);
* a crash: RESOURCE_LIMIT with ``"child exited with code N"`` and the last checkpoint, or
  :class:`SolverFailure` when no solution was found before the crash.

Being a ``spawn`` child, the solver re-imports the caller's ``__main__`` module: scripts that
call this must guard their entry point with ``if __name__ == "__main__":``.

The memory limit is on *address space* (``RLIMIT_AS``), which for a multi-threaded solver is
well above its resident size (each thread reserves a stack and a malloc arena): give CP-SAT
at least ~1 GiB.
"""

from __future__ import annotations

import contextlib
import errno
import math
import multiprocessing
import os
import resource
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Literal

from rsched.domain import Assignment, AssignmentSource, ProgramData
from rsched.domain.errors import FieldError, InvalidInput, SolverFailure
from rsched.solver.api import SolveParams
from rsched.solver.checkpoint import Checkpointer, FileCheckpointStore
from rsched.solver.control import Checkpoint, Control, Progress
from rsched.solver.result import SolveResult, SolveStatus, StopReason

LimitKind = Literal["memory", "cpu", "wall"]

POLL_SECONDS = 0.05
"""How often the parent checks the caller's abort flag, the wall clock and the child."""
CHILD_POLL_SECONDS = 0.1
"""How often the child's solver polls the abort event."""
TERMINATE_GRACE = 0.3
"""Seconds between SIGTERM and SIGKILL when the child has to be stopped."""
_NOT_MEMORY = (None, 0, -signal.SIGKILL, -signal.SIGTERM, -signal.SIGXCPU, -signal.SIGINT)
"""Exit codes that are not how a failed allocation ends (SIGKILL is an outside kill,
e.g. the system's OOM killer, reported as a crash)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Resource limits for the solver child; ``None`` means no limit."""

    memory_bytes: int | None = None
    """Address-space limit (``RLIMIT_AS``) of the child."""
    cpu_seconds: float | None = None
    """CPU time of the child, all threads together (``RLIMIT_CPU``, rounded up to whole
    seconds). At the limit the solver is asked to stop and return its best solution; a
    child still running ``cpu_grace`` CPU seconds later is killed by the kernel."""
    wall_seconds: float | None = None
    """Elapsed time from the start of the child. At the limit the solver is asked to stop;
    a child still running ``wall_grace`` seconds later is terminated."""
    cpu_grace: float = 2.0
    wall_grace: float = 1.0

    def check(self) -> None:
        errors = []
        if self.memory_bytes is not None and not (
            isinstance(self.memory_bytes, int) and self.memory_bytes > 0
        ):
            errors.append(FieldError("memory_bytes", "must be a positive number of bytes"))
        for name in ("cpu_seconds", "wall_seconds"):
            value = getattr(self, name)
            if value is not None and not (
                isinstance(value, int | float) and math.isfinite(value) and value > 0
            ):
                errors.append(FieldError(name, "must be a positive number of seconds"))
        for name in ("cpu_grace", "wall_grace"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                errors.append(FieldError(name, "must be ≥ 0 seconds"))
        if errors:
            raise InvalidInput(errors)

    def note(self, kind: LimitKind) -> str:
        """How a hit limit is named in a result's notes, e.g. ``"memory limit 512 MiB"``."""
        if kind == "memory":
            assert self.memory_bytes is not None
            return f"memory limit {_mib(self.memory_bytes)} MiB"
        if kind == "cpu":
            assert self.cpu_seconds is not None
            return f"cpu limit {_secs(self.cpu_seconds)} s"
        assert self.wall_seconds is not None
        return f"wall limit {_secs(self.wall_seconds)} s"


def _mib(n: int) -> str:
    mib = n / 2**20
    return str(round(mib)) if abs(mib - round(mib)) < 0.05 else f"{mib:.1f}"


def _secs(x: float) -> str:
    return f"{x:g}"


# ----------------------------------------------------------------------------- child


@dataclass(frozen=True, slots=True, kw_only=True)
class _Job:
    data: ProgramData
    params: SolveParams
    previous: frozenset[tuple[str, str]]
    fixed: frozenset[tuple[str, str]]
    hint: frozenset[tuple[str, str]]
    limits: Limits
    poll_seconds: float


def _child_main(conn: Connection, abort: EventType, job: _Job) -> None:
    """Entry point of the solver child (must stay importable at module level)."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    lock = threading.Lock()
    orphaned = threading.Event()
    cpu_hit = threading.Event()

    def send(msg: tuple[object, ...]) -> bool:
        try:
            with lock:
                conn.send(msg)
        except (OSError, ValueError):
            orphaned.set()  # the parent is gone: stop solving
            return False
        return True

    told = False  # the parent has the final word (result or error)
    try:
        _apply_limits(job.limits, cpu_hit, send)
        from rsched.solver.api import solve

        def on_progress(p: Progress) -> None:
            send(("progress", p))

        def on_checkpoint(cp: Checkpoint) -> None:
            send(("checkpoint", cp))

        control = Control(
            should_abort=lambda: abort.is_set() or cpu_hit.is_set() or orphaned.is_set(),
            on_progress=on_progress,
            on_checkpoint=on_checkpoint,
            poll_seconds=job.poll_seconds,
            hint=job.hint,
        )
        result = solve(job.data, job.params, control, previous=job.previous, fixed=job.fixed)
        told = send(("result", result, cpu_hit.is_set()))
    except MemoryError:
        told = send(("memory", "MemoryError"))
    except InvalidInput as exc:
        told = send(("invalid", exc.errors, exc.source))
    except BaseException as exc:
        try:
            detail = traceback.format_exc()
        except BaseException:
            detail = ""
        told = send(("error", f"{type(exc).__name__}: {exc}", detail, _is_enomem(exc)))
    finally:
        with contextlib.suppress(OSError):
            conn.close()
        # Skip interpreter teardown (native solver libraries can take a while): everything
        # the parent needs has been written to the pipe.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(0 if told else 1)


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Have the kernel SIGKILL this child when its parent dies, even by ``kill -9``
    (Linux ``PR_SET_PDEATHSIG``): an orphaned solver would keep burning CPU until its next
    message found the pipe broken, or for ever if stuck in native code."""
    if not sys.platform.startswith("linux"):
        return  # elsewhere the broken pipe stops the child at its next message
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        os._exit(1)  # the parent died before the request took effect


def _apply_limits(
    limits: Limits, cpu_hit: threading.Event, send: Callable[[tuple[object, ...]], object]
) -> None:
    _lower(resource.RLIMIT_CORE, 0)  # no core dump when a limit kills the child
    if limits.memory_bytes is not None:
        _lower(resource.RLIMIT_AS, limits.memory_bytes)
    if limits.cpu_seconds is not None:
        soft = math.ceil(limits.cpu_seconds)
        hard = soft + max(1, math.ceil(limits.cpu_grace))
        _watch_sigxcpu(cpu_hit, send)
        _lower(resource.RLIMIT_CPU, soft, hard)


def _lower(which: int, soft: int, hard: int | None = None) -> None:
    _, cur_hard = resource.getrlimit(which)
    hard = soft if hard is None else hard
    if cur_hard != resource.RLIM_INFINITY:
        hard = min(hard, cur_hard)
        soft = min(soft, hard)
    resource.setrlimit(which, (soft, hard))


def _watch_sigxcpu(cpu_hit: threading.Event, send: Callable[[tuple[object, ...]], object]) -> None:
    """At the soft CPU limit the kernel sends SIGXCPU. Python would only run a handler in
    the main thread, which sits inside the solver; the signal's wake-up fd lets a thread
    see it at once and ask the solver to stop instead."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    signal.signal(signal.SIGXCPU, lambda signum, frame: None)
    signal.set_wakeup_fd(w, warn_on_full_buffer=False)

    def watch() -> None:
        while True:
            try:
                got = os.read(r, 64)
            except OSError:
                return
            if not got:
                return
            if signal.SIGXCPU in got and not cpu_hit.is_set():
                cpu_hit.set()
                send(("cpu",))

    threading.Thread(target=watch, name="rsched-sigxcpu", daemon=True).start()


def _is_enomem(exc: BaseException) -> bool:
    """An error that says the address-space limit was hit (a library failing to map memory
    raises ImportError/OSError rather than MemoryError)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, MemoryError):
            return True
        if isinstance(cur, OSError) and cur.errno == errno.ENOMEM:
            return True
        text = str(cur).lower()
        if "cannot allocate memory" in text or "failed to map segment" in text:
            return True
        cur = cur.__cause__ or cur.__context__
    return False


# ---------------------------------------------------------------------------- parent


@dataclass(kw_only=True)
class _Watch:
    """What the parent learned while the child ran."""

    best: Checkpoint | None = None
    first_at: float | None = None
    checkpoints: int = 0
    progress: Progress | None = None
    final: tuple[object, ...] | None = None
    limit: LimitKind | None = None
    """The first limit hit, as the parent saw it."""
    aborted: bool = False
    """The caller's abort came before any limit."""
    forced: bool = False
    """The child had to be terminated."""


def solve_in_sandbox(
    data: ProgramData,
    params: SolveParams | None = None,
    *,
    limits: Limits,
    control: Control | None = None,
    previous: frozenset[tuple[str, str]] = frozenset(),
    fixed: frozenset[tuple[str, str]] = frozenset(),
    checkpoint_dir: Path | None = None,
    run: str | None = None,
    checkpoint_interval: float = 60.0,
    abort_grace: float = 0.6,
) -> SolveResult:
    """Solve ``data`` like :func:`rsched.solver.api.solve`, in a child process under
    ``limits``. Checkpoints go to ``control.on_checkpoint`` and, with ``checkpoint_dir``,
    to a :class:`FileCheckpointStore` there (labelled ``run``). ``abort_grace``: how long
    the child may take to return its result after an abort before it is terminated."""
    params = params or SolveParams()
    params.check()
    limits.check()
    control = control or Control()
    saver = (
        Checkpointer(
            FileCheckpointStore(checkpoint_dir),
            program_id=data.program.id,
            run=run or f"sandbox-{os.getpid()}-{time.time_ns()}",
            algorithm=params.algorithm,
            min_interval=checkpoint_interval,
        )
        if checkpoint_dir is not None
        else None
    )
    ctx = multiprocessing.get_context("spawn")
    abort = ctx.Event()
    reader, writer = ctx.Pipe(duplex=False)
    job = _Job(
        data=data,
        params=params,
        previous=previous,
        fixed=fixed,
        hint=control.hint,
        limits=limits,
        poll_seconds=min(control.poll_seconds, CHILD_POLL_SECONDS),
    )
    proc = ctx.Process(
        target=_child_main, args=(writer, abort, job), name="rsched-solver", daemon=True
    )
    watch = _Watch()
    t0 = time.monotonic()
    proc.start()
    writer.close()
    finished = False
    try:
        _supervise(proc, reader, abort, control, saver, limits, watch, t0, abort_grace)
        finished = True
    finally:
        _stop(proc, wait=finished and not watch.forced)
        reader.close()
    return _conclude(data, params, previous, limits, saver, watch, proc.exitcode, t0)


def _supervise(
    proc: multiprocessing.process.BaseProcess,
    reader: Connection,
    abort: EventType,
    control: Control,
    saver: Checkpointer | None,
    limits: Limits,
    watch: _Watch,
    t0: float,
    abort_grace: float,
) -> None:
    wall_deadline = t0 + limits.wall_seconds if limits.wall_seconds is not None else None
    stop_by: float | None = None
    heard = t0  # last progress forwarded to the caller
    heard_elapsed = 0.0
    while True:
        now = time.monotonic()
        if stop_by is None:
            if control.should_abort():
                if watch.limit is None:
                    watch.aborted = True
                abort.set()
                stop_by = now + abort_grace
            elif wall_deadline is not None and now >= wall_deadline:
                if watch.limit is None:
                    watch.limit = "wall"
                abort.set()
                stop_by = now + limits.wall_grace
        if stop_by is not None and now >= stop_by:
            watch.forced = True
            return
        if control.on_progress is not None and now - heard >= 1.0:
            last = watch.progress
            control.on_progress(
                Progress(
                    elapsed=heard_elapsed + (now - heard),
                    solutions=last.solutions if last else watch.checkpoints,
                    objective=last.objective if last else None,
                    bound=last.bound if last else None,
                    phase="starting" if last is None else "waiting",
                )
            )
            heard_elapsed += now - heard
            heard = now
        timeout = POLL_SECONDS
        if stop_by is not None:
            timeout = min(timeout, max(0.0, stop_by - now))
        elif wall_deadline is not None:
            timeout = min(timeout, max(0.0, wall_deadline - now))
        if not reader.poll(timeout):
            if not proc.is_alive() and not reader.poll(0):
                return
            continue
        try:
            msg = reader.recv()
        except Exception:  # EOF, or a message cut short by the child's death
            return
        kind = msg[0]
        if kind == "progress":
            progress: Progress = msg[1]
            watch.progress = progress
            heard, heard_elapsed = time.monotonic(), progress.elapsed
            if control.on_progress is not None:
                control.on_progress(progress)
        elif kind == "checkpoint":
            cp: Checkpoint = msg[1]
            watch.checkpoints += 1
            if watch.first_at is None:
                watch.first_at = cp.elapsed
            if watch.best is None or cp.objective <= watch.best.objective:
                watch.best = cp
            if saver is not None:
                saver(cp)
            if control.on_checkpoint is not None:
                control.on_checkpoint(cp)
        elif kind == "cpu":
            if watch.limit is None and not watch.aborted:
                watch.limit = "cpu"
        else:
            watch.final = msg
            return


def _stop(proc: multiprocessing.process.BaseProcess, *, wait: bool) -> None:
    """Make sure the child is gone: let it exit (``wait``), else SIGTERM, else SIGKILL."""
    if wait:
        proc.join(timeout=2.0)
    if proc.is_alive():
        proc.terminate()
        proc.join(timeout=TERMINATE_GRACE)
    if proc.is_alive():
        proc.kill()
        proc.join()


def _conclude(
    data: ProgramData,
    params: SolveParams,
    previous: frozenset[tuple[str, str]],
    limits: Limits,
    saver: Checkpointer | None,
    watch: _Watch,
    exitcode: int | None,
    t0: float,
) -> SolveResult:
    wall = time.monotonic() - t0
    extra: list[str] = []
    if saver is not None and saver.errors:
        extra.append(f"checkpoint save failed: {saver.errors[-1]}")
    final = watch.final
    kind = final[0] if final else None

    if kind == "result":
        assert final is not None
        result: SolveResult = final[1]  # type: ignore[assignment]
        if final[2] and watch.limit is None and not watch.aborted:
            watch.limit = "cpu"
        if watch.limit is not None and result.stop_reason is StopReason.ABORTED:
            result = replace(
                result,
                stop_reason=StopReason.RESOURCE_LIMIT,
                notes=(limits.note(watch.limit), *result.notes),
            )
        if extra:
            result = replace(result, notes=(*result.notes, *extra))
        return result
    if kind == "invalid":
        assert final is not None
        raise InvalidInput(final[1], source=str(final[2]))  # type: ignore[arg-type]

    # The child did not return a result: say why, and fall back on the last checkpoint.
    stop = StopReason.RESOURCE_LIMIT
    crash: str | None = None
    failure = ""
    if watch.forced and watch.aborted:
        stop = StopReason.ABORTED
        notes = ["the solver did not stop in time after the abort and was terminated"]
    elif watch.limit is not None:
        notes = [limits.note(watch.limit)]
    elif kind == "memory" or (kind == "error" and final is not None and final[3]):
        assert final is not None
        notes = [limits.note("memory") if limits.memory_bytes else "out of memory"]
        if kind == "error":
            notes.append(str(final[1]))
    elif exitcode == -signal.SIGXCPU and limits.cpu_seconds is not None:
        notes = [limits.note("cpu")]
    elif limits.memory_bytes is not None and exitcode not in _NOT_MEMORY and kind is None:
        # Native code that cannot allocate under RLIMIT_AS does not raise MemoryError: glibc
        # exits with 127 ("cannot allocate memory for thread-local data"), OpenBLAS with 1,
        # C++ ends in abort(). The child died without a word, so the note names both the
        # limit and the exit code.
        notes = [
            limits.note("memory"),
            f"child exited with code {exitcode} (likely an allocation failure)",
        ]
    elif kind == "error":
        assert final is not None
        crash = f"solver failed: {final[1]}"
        failure = str(final[2])
        notes = [crash]
    else:
        crash = f"child exited with code {exitcode}"
        notes = [crash]
    if crash is not None and watch.best is None:
        raise SolverFailure(
            f"solver child stopped before finding any schedule: {crash}"
            + (f"\n{failure}" if failure else "")
        )
    return _from_checkpoint(data, params, previous, watch, stop, [*notes, *extra], wall)


def _from_checkpoint(
    data: ProgramData,
    params: SolveParams,
    previous: frozenset[tuple[str, str]],
    watch: _Watch,
    stop: StopReason,
    notes: list[str],
    wall: float,
) -> SolveResult:
    from rsched.rules.report import validate

    cp = watch.best
    pairs = sorted(cp.pairs) if cp is not None else []
    assignments = tuple(
        Assignment(person_id=p, slot_id=s, source=AssignmentSource.SOLVER) for p, s in pairs
    )
    report = validate(data, assignments, previous=previous)
    if cp is not None:
        notes.append(
            f"schedule from the last checkpoint (objective {cp.objective:g} at {cp.elapsed:.1f} s)"
        )
        if report.violations:
            notes.append(
                f"validator found {len(report.violations)} hard violation(s) in the "
                "checkpoint: " + "; ".join(sorted({v.rule for v in report.violations}))
            )
    progress = watch.progress
    bound = progress.bound if progress is not None else None
    return SolveResult(
        algorithm=params.algorithm,
        status=SolveStatus.FEASIBLE if cp is not None else SolveStatus.UNKNOWN,
        stop_reason=stop,
        assignments=assignments,
        objective=cp.objective if cp is not None else None,
        bound=bound if cp is not None else None,
        time_to_first=watch.first_at,
        solutions=max(watch.checkpoints, progress.solutions if progress is not None else 0),
        wall_seconds=wall,
        notes=tuple(notes),
        report=report,
    )
