"""``vmpc eval horizons --sweep``: every terminal kind at every horizon, on the same episodes,
and the Pareto picture of closed-loop cost against compute.

The sweep is the horizons study with a grid of controllers (:func:`.settings.sweep_grid`: T in
{2, 3, 5, 10, 20, 50, 100, 200} x {learned, quadratic, none} by default) and the longest
quadratic as the reference; :func:`eval_sweep` runs it through :func:`.study.eval_horizons`
(which writes ``horizons.json``, ``horizons.csv`` and ``runs.csv`` as ever) and adds one
:class:`SweepPoint` per variant, terminal kind and horizon: ``sweep.json``, ``sweep.csv``,
``sweep.png`` and the table :func:`format_sweep_table`.

A point is medians over episodes: the per-episode cost ratio to the reference, each run's median
solve time per replan, the final EE error. Medians, because a long horizon with one FDDP
iteration per replan settles in a poor local optimum from some starts (an outlier a mean would
smear over the whole curve).
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from mpc.io import atomic_write_text, save_figure

from .results import MachineInfo, ResolvedSettings, StudyResult, ValueInfo, _jsonable
from .settings import TERMINALS, PushSetup, StudySettings, parse_controllers, sweep_grid
from .study import eval_horizons

__all__ = [
    "SweepPoint",
    "SweepResult",
    "eval_sweep",
    "format_sweep_table",
    "plot_sweep",
    "read_sweep",
    "sweep_of",
    "write_sweep_outputs",
]

SWEEP_FILES = ("sweep.json", "sweep.csv", "sweep.png")


@dataclass
class SweepPoint:
    """One terminal kind at one horizon in one variant (a row of sweep.csv, a marker of
    sweep.png): medians over the episodes, spreads as 10th-90th percentiles."""

    variant: str  # 'no_push' or 'push'
    terminal: str  # 'learned', 'quadratic' or 'none'
    horizon: int
    controller: str  # T<horizon>-<terminal>
    runs: int
    cost_ratio_median: float | None  # median over episodes of cost / reference cost
    cost_ratio_p10: float | None
    cost_ratio_p90: float | None
    solve_ms_median: float | None  # median over runs of each run's median solve per replan
    solve_ms_p10: float | None
    solve_ms_p90: float | None
    ee_error_final_median_mm: float | None
    never_settled: int  # runs whose error never stayed within task.tolerance_m (before a push)
    never_recovered: int | None  # push runs that never came back within tolerance
    deadline_misses: int  # replans slower than the replan period (counted; lockstep)
    solver_failures: int


@dataclass(kw_only=True)
class SweepResult:
    """What ``sweep.json`` holds: the study's identity and settings, and the points. Every run
    (and the episodes, for replaying one) is in the same folder's ``horizons.json``."""

    study: str = "vmpc eval horizons --sweep"
    date: str
    config: str
    overrides: list[str]
    value: ValueInfo
    seed: int
    episodes: int
    settings: ResolvedSettings
    horizons: list[int]
    terminals: list[str]
    reference: str
    points: list[SweepPoint]
    wall_s: float
    machine: MachineInfo

    def to_json_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _jsonable(asdict(self))
        return out

    def point(self, variant: str, terminal: str, horizon: int) -> SweepPoint | None:
        return next(
            (
                p
                for p in self.points
                if (p.variant, p.terminal, p.horizon) == (variant, terminal, horizon)
            ),
            None,
        )


def sweep_of(result: StudyResult) -> SweepResult:
    """The sweep's points from a finished study (its controllers parsed back into horizon and
    terminal kind; points grouped by variant, then terminal kind, horizons ascending)."""
    specs = parse_controllers(result.controllers)
    horizons = sorted({s.horizon for s in specs})
    terminals = [t for t in TERMINALS if any(s.terminal == t for s in specs)]
    order = sorted(specs, key=lambda s: (terminals.index(s.terminal), s.horizon))
    points: list[SweepPoint] = []
    for variant, per in result.aggregates.items():
        for spec in order:
            a = per.get(spec.label)
            if a is None:
                continue
            final = a.ee_error_final_median_m
            points.append(
                SweepPoint(
                    variant=variant,
                    terminal=spec.terminal,
                    horizon=spec.horizon,
                    controller=spec.label,
                    runs=a.runs,
                    cost_ratio_median=a.cost_ratio_median,
                    cost_ratio_p10=a.cost_ratio_p10,
                    cost_ratio_p90=a.cost_ratio_p90,
                    solve_ms_median=a.solve_ms_p50_median,
                    solve_ms_p10=a.solve_ms_p50_p10,
                    solve_ms_p90=a.solve_ms_p50_p90,
                    ee_error_final_median_mm=None if final is None else final * 1e3,
                    never_settled=a.never_settled,
                    never_recovered=a.never_recovered,
                    deadline_misses=a.deadline_misses,
                    solver_failures=a.solver_failures,
                )
            )
    return SweepResult(
        date=result.date,
        config=result.config,
        overrides=result.overrides,
        value=result.value,
        seed=result.seed,
        episodes=len(result.episodes),
        settings=result.settings,
        horizons=horizons,
        terminals=terminals,
        reference=result.reference,
        points=points,
        wall_s=result.wall_s,
        machine=result.machine,
    )


# -- the table -------------------------------------------------------------------------------------
def _cell(p: SweepPoint | None, field: str, fmt: str) -> str:
    x = None if p is None else getattr(p, field)
    return "-" if x is None else format(x, fmt)


def format_sweep_table(sweep: SweepResult) -> str:
    """The printed summary: one line per terminal kind and horizon, no push and push side by
    side. The numbers are those of sweep.json and sweep.csv, rounded."""
    s = sweep.settings
    n_ctrl = len(sweep.horizons) * len(sweep.terminals)
    runs = sum(p.runs for p in sweep.points)
    push = (
        f"push {s.push.force_n:g} N for {s.push.duration_s:g} s at {s.push.start_s:g} s"
        if "push" in s.variants
        else "no push runs"
    )
    lines = [
        f"vmpc eval horizons --sweep: {sweep.episodes} held-out episodes x {len(s.variants)} "
        f"variant(s) x {n_ctrl} controllers ({len(sweep.horizons)} horizons x "
        f"{len(sweep.terminals)} terminals) = {runs} runs",
        f"  value {sweep.value.path} ({sweep.value.model_id}), "
        f"{'target-conditioned' if sweep.value.target_conditioned else 'fixed target'}",
        f"  dt {s.dt} s, replan every {s.replan_every} sim steps ({s.replan_period_ms:g} ms, "
        f"lockstep), {s.duration_s:g} s per run, seed {sweep.seed}, {s.workers} worker(s); {push}",
        "",
        f"  ref = {sweep.reference}",
        f"  {'':<14}{'cost / ref':^20}{'solve p50 [ms]':^20}{'final error [mm]':^20}"
        f"{'never':^16}".rstrip(),
        f"  {'terminal':<10}{'T':>4}{'no push':>10}{'push':>10}{'no push':>10}{'push':>10}"
        f"{'no push':>10}{'push':>10}{'settled':>8}{'recov':>8}",
    ]
    for terminal in sweep.terminals:
        for h in sweep.horizons:
            a = sweep.point("no_push", terminal, h)
            b = sweep.point("push", terminal, h)
            if a is None and b is None:
                continue
            lines.append(
                f"  {terminal:<10}{h:>4}"
                f"{_cell(a, 'cost_ratio_median', '.4f'):>10}"
                f"{_cell(b, 'cost_ratio_median', '.4f'):>10}"
                f"{_cell(a, 'solve_ms_median', '.3f'):>10}"
                f"{_cell(b, 'solve_ms_median', '.3f'):>10}"
                f"{_cell(a, 'ee_error_final_median_mm', '.3f'):>10}"
                f"{_cell(b, 'ee_error_final_median_mm', '.3f'):>10}"
                f"{_cell(a, 'never_settled', 'd'):>8}"
                f"{_cell(b, 'never_recovered', 'd'):>8}"
            )
    note = (
        f"medians over episodes: cost / ref is each episode's closed-loop cost over "
        f"{sweep.reference}'s on the same episode; solve p50 is each run's median solve time "
        "per replan; never: runs that did not settle (no push) or recover (push) within "
        "task.tolerance_m"
    )
    lines += ["", textwrap.fill(note, 100, initial_indent="  ", subsequent_indent="  ")]
    return "\n".join(lines)


# -- files -----------------------------------------------------------------------------------------
def _csv(points: list[SweepPoint]) -> str:
    buf = io.StringIO()
    rows = [asdict(p) for p in points]
    columns = list(SweepPoint.__dataclass_fields__)
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r[k] is None else r[k]) for k in columns})
    return buf.getvalue()


_COLORS = {"learned": "C0", "quadratic": "C1", "none": "C2"}
_MARKERS = {"learned": "o", "quadratic": "s", "none": "^"}
Y_CAP = 3.0  # ratios above sit on the top edge, open, and are listed in a box with their value
_Y_TICKS = (0.5, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 2.5, 3.0)
_X_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


_LABEL_SPOTS = ((5, 5), (5, -11), (-24, 5), (-24, -11), (5, -3), (-24, -3))  # offsets [pt]


def _place_labels(ax: Any, labels: list[tuple[str, float, float, str | None]]) -> None:
    """Annotate each point (text, x, y, color) at the first of :data:`_LABEL_SPOTS` whose box
    overlaps no label placed before it; a label with no free spot is left out (its horizon is
    then next to another kind's label of the same horizon or in the table)."""
    fig = ax.figure
    fig.canvas.draw()  # final scales and limits: data -> pixels
    pt = fig.dpi / 72.0
    boxes: list[tuple[float, float, float, float]] = []
    for text, x, y, color in labels:
        px, py = ax.transData.transform((x, y))
        w, h = (4.3 * len(text) + 2) * pt, 9 * pt  # a 7-pt label, generously
        for dx, dy in _LABEL_SPOTS:
            box = (px + dx * pt, py + dy * pt, px + dx * pt + w, py + dy * pt + h)
            if all(
                box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in boxes
            ):
                boxes.append(box)
                ax.annotate(
                    text,
                    (x, y),
                    textcoords="offset points",
                    xytext=(dx, dy),
                    fontsize=7,
                    color=color,
                )
                break


def plot_sweep(sweep: SweepResult, path: Path) -> Path:
    """The Pareto picture: median cost ratio against median solve time per replan (both axes
    log), one curve per terminal kind through its horizons, one panel per variant. Ratios above
    :data:`Y_CAP` sit on the top edge as open markers and are listed with their value in a box,
    so the region near the reference stays readable; labels that would overlap move or are left
    out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    variants = [v for v in ("no_push", "push") if any(p.variant == v for p in sweep.points)]
    n = max(1, len(variants))
    fig, axes = plt.subplots(1, n, figsize=(6.4 * n, 5.0), squeeze=False)
    ratios = [p.cost_ratio_median for p in sweep.points if p.cost_ratio_median]
    y_lo = min([*ratios, 1.0]) / 1.03
    y_hi = min(max([*ratios, 1.02]), Y_CAP) * 1.05
    times = [p.solve_ms_median for p in sweep.points if p.solve_ms_median]
    x_lo, x_hi = (min(times) / 1.5, max(times) * 1.5) if times else (0.1, 10.0)
    plain = FuncFormatter(lambda v, _pos: f"{v:g}")
    for ax, variant in zip(axes[0], variants, strict=False):
        labels: list[tuple[str, float, float, str | None]] = []
        off_scale: list[str] = []
        for terminal in sweep.terminals:
            pts = [
                p
                for p in sweep.points
                if p.variant == variant
                and p.terminal == terminal
                and p.solve_ms_median
                and p.cost_ratio_median
            ]
            if not pts:
                continue
            color = _COLORS.get(terminal)
            marker = _MARKERS.get(terminal, "o")
            xs = [float(p.solve_ms_median or 0) for p in pts]
            ys = [min(float(p.cost_ratio_median or 0), Y_CAP) for p in pts]
            ax.plot(xs, ys, "-", marker=marker, color=color, lw=1.5, ms=7, label=terminal)
            capped = [p for p in pts if (p.cost_ratio_median or 0) > Y_CAP]
            if capped:
                ax.plot(
                    [float(p.solve_ms_median or 0) for p in capped],
                    [Y_CAP] * len(capped),
                    marker,
                    ms=7,
                    color=color,
                    mfc="white",
                    zorder=3,
                )
                off_scale.append(
                    f"{terminal}: "
                    + ", ".join(f"T{p.horizon} {p.cost_ratio_median:.3g}x" for p in capped)
                )
            labels += [
                (f"T{p.horizon}", x, y, color)
                for p, x, y in zip(pts, xs, ys, strict=True)
                if p not in capped
            ]
        if off_scale:
            ax.text(
                0.97,
                0.55,
                f"above {Y_CAP:g} (open markers):\n" + "\n".join(off_scale),
                transform=ax.transAxes,
                ha="right",
                va="center",
                fontsize=7.5,
                bbox={"boxstyle": "round", "fc": "white", "ec": "0.7"},
            )
        ax.axhline(1.0, color="k", lw=0.8, ls="--", label=f"{sweep.reference} (reference)")
        ax.axhline(1.02, color="tab:green", lw=0.8, ls=":", label="+2 %")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(x_lo, x_hi)
        ax.set_ylim(y_lo, y_hi)
        ax.xaxis.set_major_locator(FixedLocator([t for t in _X_TICKS if x_lo <= t <= x_hi]))
        ax.yaxis.set_major_locator(FixedLocator([t for t in _Y_TICKS if y_lo <= t <= y_hi]))
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(plain)
            axis.set_minor_locator(NullLocator())
        ax.set_xlabel("solve time per replan, median over runs [ms] (log)")
        ax.set_ylabel(f"closed-loop cost / {sweep.reference}, median (log)")
        push = sweep.settings.push
        ax.set_title(
            "without push"
            if variant == "no_push"
            else f"with a {push.force_n:g} N push for {push.duration_s:g} s"
        )
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, title="terminal", title_fontsize=8, loc="upper right")
        _place_labels(ax, labels)
    fig.suptitle(
        f"{sweep.episodes} held-out episodes, medians; value {sweep.value.model_id}; "
        f"dt {sweep.settings.dt:g} s, replan every {sweep.settings.replan_period_ms:g} ms",
        fontsize=9,
    )
    return save_figure(fig, path)


def read_sweep(path: Path) -> SweepResult:
    """A ``sweep.json`` back as a :class:`SweepResult` (to redraw or re-tabulate it)."""
    d = json.loads(Path(path).read_text())
    settings = dict(d["settings"])
    settings["push"] = PushSetup(**settings["push"])
    return SweepResult(
        **{
            **d,
            "value": ValueInfo(**d["value"]),
            "settings": ResolvedSettings(**settings),
            "machine": MachineInfo(**d["machine"]),
            "points": [SweepPoint(**p) for p in d["points"]],
        }
    )


def write_sweep_outputs(sweep: SweepResult, out: Path, *, plot: bool = True) -> list[Path]:
    """Write sweep.json, sweep.csv (and sweep.png) to ``out``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / SWEEP_FILES[0], out / SWEEP_FILES[1]]
    atomic_write_text(paths[0], json.dumps(sweep.to_json_dict(), indent=2) + "\n")
    atomic_write_text(paths[1], _csv(sweep.points))
    if plot:
        paths.append(plot_sweep(sweep, out / SWEEP_FILES[2]))
    return paths


# -- the entry point -------------------------------------------------------------------------------
def eval_sweep(
    settings: StudySettings,
    horizons: list[int | str],
    terminals: list[str],
    *,
    out: Path | None = None,
    progress: bool = True,
    plot: bool = True,
) -> tuple[StudyResult, SweepResult]:
    """Run every terminal kind at every horizon on the same episodes (``settings.controllers``
    is replaced by the grid; ``settings.reference`` defaults to the longest quadratic). Writes
    the horizons study's files and the sweep's to ``out`` (none if None)."""
    labels, reference = sweep_grid(horizons, terminals)
    settings = replace(settings, controllers=labels, reference=settings.reference or reference)
    result = eval_horizons(settings, out=out, progress=progress, plot=False)
    sweep = sweep_of(result)
    if out is not None:
        write_sweep_outputs(sweep, out, plot=plot)
    return result, sweep
