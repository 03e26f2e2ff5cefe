"""A rich progress display fed by the solver's control hooks; Ctrl-C aborts gracefully."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from rsched.solver.control import AbortFlag, Control
from rsched.solver.control import Progress as SolverProgress


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


@contextmanager
def solver_progress(
    time_limit: float, *, console: Console | None = None, enabled: bool = True
) -> Iterator[tuple[Control, AbortFlag]]:
    """Yield a Control wired to a progress bar and an AbortFlag set by Ctrl-C."""
    console = console or Console(stderr=True)
    flag = AbortFlag()
    previous_handler = signal.getsignal(signal.SIGINT)

    def on_sigint(_sig: int, _frame: FrameType | None) -> None:
        flag.set("interrupted from the keyboard")

    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        signal.signal(signal.SIGINT, on_sigint)
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        disable=not enabled,
        transient=False,
    )
    task = bar.add_task("solving", total=time_limit, info="starting")

    def on_progress(p: SolverProgress) -> None:
        gap = "—" if p.gap is None else f"{p.gap:.2%}"
        info = (
            f"solutions {p.solutions}  objective {_fmt(p.objective)}  "
            f"bound {_fmt(p.bound)}  gap {gap}"
        )
        bar.update(task, completed=min(p.elapsed, time_limit), info=info)

    try:
        with bar:
            yield Control(should_abort=flag, on_progress=on_progress), flag
            bar.update(task, completed=time_limit, description="done")
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous_handler)
