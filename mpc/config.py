"""The run configuration: one YAML file, validated by pydantic, overridable with ``--set``.

Sections: robot, sim, task, ocp, mpc, disturbances, mismatch, run. The robot, sim, disturbance
and mismatch schemas belong to :mod:`sim`; the rest are the controller's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from sim.specs import DisturbanceSpec, MismatchSpec, RobotSpec, SimSpec, Strict, Vec3

from .bridge.spec import BridgeSpec
from .errors import ConfigError

__all__ = [
    "Config",
    "CostWeights",
    "FailureSpec",
    "MpcSpec",
    "OcpSpec",
    "RunSpec",
    "SwapSpec",
    "ValueSpec",
    "TargetChange",
    "TaskSpec",
    "TerminalKind",
    "TerminalSpec",
    "WarmStartSpec",
    "WatchdogSpec",
    "WorkspaceSpec",
    "apply_override",
    "dump_config",
    "first_validation_error",
    "load_config",
    "load_yaml_model",
    "parse_terminal_kind",
    "read_yaml_sections",
]

BUILTIN_TERMINALS = ("none", "quadratic")


def _terminal_kind(value: Any) -> Any:
    """'none' and 'quadratic' stay names; anything that looks like a path becomes a Path."""
    if isinstance(value, Path) or value in BUILTIN_TERMINALS:
        return value
    if isinstance(value, str) and ("/" in value or "." in value):
        return Path(value)
    raise ValueError(f"{value!r} is not 'none', 'quadratic' or the path of a value model")


# The terminal knot: one of the C++ terminals by name, or the path of a value-model artifact.
TerminalKind = Annotated[Literal["none", "quadratic"] | Path, BeforeValidator(_terminal_kind)]
_TERMINAL_KIND: TypeAdapter[Literal["none", "quadratic"] | Path] = TypeAdapter(TerminalKind)


def parse_terminal_kind(spec: str | Path) -> Literal["none", "quadratic"] | Path:
    """A request's terminal (a swap, a bridge command) as the config would read it; raises
    ValueError with a one-line reason."""
    try:
        return _TERMINAL_KIND.validate_python(spec)
    except ValidationError as exc:
        raise ValueError(first_validation_error(exc)[1]) from None


class WorkspaceSpec(Strict):
    min: Vec3 = [-1.0, -1.0, 0.0]  # [m] world frame
    max: Vec3 = [1.0, 1.0, 1.5]


class TargetChange(Strict):
    t: float = Field(ge=0, description="sim time of the change [s]")
    target: Vec3 = Field(description="the new EE target in the world frame [m]")


class TaskSpec(Strict):
    target: Vec3 = Field(description="EE target in the world frame [m]")
    workspace: WorkspaceSpec = Field(default_factory=WorkspaceSpec)
    tolerance_m: float = Field(default=0.005, gt=0, description="'reached' and 'recovered' [m]")
    target_changes: list[TargetChange] = Field(
        default_factory=list,
        description="scheduled target moves (like the bridge's set_target); each restarts the "
        "solver from the warm-start policy's rollout with mpc.warm_start.kind: policy",
    )

    @model_validator(mode="after")
    def _target_in_workspace(self) -> TaskSpec:
        lo, hi = self.workspace.min, self.workspace.max
        if any(lo[i] > hi[i] for i in range(3)):
            raise ValueError("workspace.min must be <= workspace.max on every axis")
        for target in [self.target, *(c.target for c in self.target_changes)]:
            if any(not lo[i] <= target[i] <= hi[i] for i in range(3)):
                raise ValueError(f"target {target} is outside the workspace box {lo} .. {hi}")
        return self


class CostWeights(Strict):
    """Running-cost weights. A weight of 0 leaves that term out of the problem."""

    ee_translation: float = Field(default=1.0, ge=0)
    state_reg: float = Field(default=0.01, ge=0, description="toward [q_posture, 0]")
    state_reg_q: float = Field(default=1.0, ge=0, description="relative weight of posture part")
    state_reg_v: float = Field(default=1.0, ge=0, description="relative weight of velocity part")
    torque_reg: float = Field(default=1e-3, ge=0, description="toward gravity compensation")
    ee_velocity: float = Field(default=0.0, ge=0, description="EE linear velocity")
    state_limits: float = Field(default=0.0, ge=0, description="quadratic barrier at q, v limits")


class TerminalSpec(Strict):
    kind: TerminalKind = Field(
        default="quadratic",
        description="'none', 'quadratic', or the path of a learned value model",
    )
    ee_translation: float = Field(default=10.0, ge=0)
    state_reg: float = Field(default=0.1, ge=0)
    ee_velocity: float = Field(default=0.0, ge=0)


class OcpSpec(Strict):
    dt: float = Field(default=0.05, gt=0, le=1.0, description="knot spacing [s]")
    horizon: int = Field(default=10, gt=0, le=5000, description="number of running knots T")
    integrator: Literal["euler", "rk2", "rk3", "rk4"] = "euler"
    armature: float | list[float] = Field(default=0.0, description="rotor inertia [kg m^2]")
    torque_bounds: bool = Field(default=True, description="box torque limits (BoxFDDP)")
    costs: CostWeights = Field(default_factory=CostWeights)
    terminal: TerminalSpec = Field(default_factory=TerminalSpec)


class FailureSpec(Strict):
    reset_after: int = Field(default=3, ge=1, description="consecutive failures, then cold start")
    fallback_after: int = Field(default=20, ge=1, description="then gravity comp + damping")
    fallback_damping: float = Field(default=5.0, ge=0, description="[N m s/rad]")


class WatchdogSpec(Strict):
    """Measured-state and plan-age watchdogs; both hand over to the brake (gravity compensation
    at the last good posture with damping toward rest)."""

    state_hold_s: float = Field(
        default=0.02, ge=0, description="hold the last good torque this long on a bad state [s]"
    )
    max_plan_age_s: float = Field(
        default=0.1, gt=0, description="older plans brake (and never beyond the horizon) [s]"
    )
    q_margin: float = Field(
        default=0.1, ge=0, description="a measured q this far outside the URDF limits is bad [rad]"
    )
    v_scale: float = Field(
        default=3.0, ge=1, description="a measured |v| above v_scale x the URDF limit is bad"
    )
    brake_damping: float = Field(default=5.0, ge=0, description="[N m s/rad]")


class WarmStartSpec(Strict):
    """Where the solver starts when the shifted previous solution is a poor guess: the first
    solve, a target change and a reset after failures."""

    kind: Literal["shift", "policy"] = Field(
        default="shift",
        description="shift: the shifted last solution (gravity-holding after a reset); policy: "
        "the rollout of a learned policy (vmpc train plal|pddp) on those events",
    )
    path: str | None = Field(
        default=None,
        description="the policy artifact (kind: policy): absolute or relative to the config "
        "file's folder, inside value.allowed_dirs",
    )

    @model_validator(mode="after")
    def _path_for_policy(self) -> WarmStartSpec:
        if self.kind == "policy" and not self.path:
            raise ValueError("kind: policy needs a path to a policy artifact")
        return self


class MpcSpec(Strict):
    replan_every: int = Field(default=1, ge=1, description="sim steps between replans")
    maxiter: int = Field(default=1, ge=1, description="FDDP iterations per replan")
    init_maxiter: int = Field(default=100, ge=1, description="iterations of the first solve")
    nthreads: int = Field(default=1, ge=1, description="Crocoddyl threads (1 is fastest here)")
    timing: Literal["lockstep", "wallclock"] = "lockstep"
    failure: FailureSpec = Field(default_factory=FailureSpec)
    watchdog: WatchdogSpec = Field(default_factory=WatchdogSpec)
    warm_start: WarmStartSpec = Field(default_factory=WarmStartSpec)


class SwapSpec(Strict):
    t: float = Field(ge=0, description="sim time of the request [s]")
    terminal: TerminalKind = Field(description="'none', 'quadratic' or a value-model path")
    force: bool = Field(default=False, description="accept a task-fingerprint mismatch")


class ValueSpec(Strict):
    """Learned terminal values: where they may be loaded from, how they are evaluated."""

    allowed_dirs: list[str] = Field(
        default_factory=lambda: ["models"],
        description="folders value models may be loaded from: absolute, or relative to the "
        "config file's folder; refused if writable by group or others or owned by another user",
    )
    evaluator: Literal["fast", "torchscript"] = Field(
        default="fast",
        description="float64 numpy path (runs no code from the file), or the TorchScript "
        "module itself (runs the file: only for a trusted sha256)",
    )
    trusted_sha256: list[Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] = Field(
        default_factory=list,
        description="whole-file sha256 of models the TorchScript evaluator may run, on top of "
        "the TRUSTED.sha256 manifest next to them",
    )
    max_call_us: float = Field(
        default=1000.0, gt=0, description="budget for one calc + calcDiff at validation [us]"
    )
    validation_states: int = Field(
        default=32, ge=0, le=10000, description="states sampled to validate a swap (+ current)"
    )
    max_abs_value: float = Field(
        default=1e9, gt=0, description="bound on |V|, |Vx| and |Vxx| over the validation states"
    )
    load_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="a swap still being loaded and validated after this long is refused [s]",
    )
    swap_worker: Literal["auto", "process", "thread"] = Field(
        default="auto",
        description="where swaps are loaded and validated: a child process (the loop's GIL is "
        "never held by a load), a thread of the loop's process, or auto: the process in "
        "wallclock timing with the fast evaluator, else the thread (lockstep waits anyway)",
    )
    swaps: list[SwapSpec] = Field(default_factory=list, description="scheduled terminal swaps")


class RunSpec(Strict):
    duration: float = Field(default=5.0, gt=0, description="sim time [s]")
    seed: int = Field(default=0, ge=0, description="seeds random pushes and noise")


class Config(Strict):
    robot: RobotSpec
    sim: SimSpec = Field(default_factory=SimSpec)
    task: TaskSpec
    ocp: OcpSpec = Field(default_factory=OcpSpec)
    mpc: MpcSpec = Field(default_factory=MpcSpec)
    disturbances: DisturbanceSpec = Field(default_factory=DisturbanceSpec)
    mismatch: MismatchSpec = Field(default_factory=MismatchSpec)
    value: ValueSpec = Field(default_factory=ValueSpec)
    bridge: BridgeSpec = Field(default_factory=BridgeSpec)
    run: RunSpec = Field(default_factory=RunSpec)

    _source: str = PrivateAttr(default="<config>")

    @property
    def source(self) -> str:
        return self._source

    @property
    def base_dir(self) -> Path:
        return Path(self._source).parent if self._source != "<config>" else Path.cwd()

    @property
    def replan_period_s(self) -> float:
        return self.mpc.replan_every * self.sim.timestep


def _format_location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) if loc else "(top level)"


def first_validation_error(exc: ValidationError, drop: tuple[str, ...] = ()) -> tuple[str, str]:
    """(dotted key, message) of pydantic's first error; ``drop`` removes union tags from keys."""
    err = exc.errors()[0]
    loc = tuple(
        p
        for p in err["loc"]
        if not (isinstance(p, str) and (p.startswith("function-") or p in drop))
    )
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return _format_location(loc), msg


def apply_override(raw: dict[str, Any], assignment: str) -> str:
    """Apply ``a.b.c=value`` (value parsed as YAML) to a raw config dict; returns the key path."""
    if "=" not in assignment:
        raise ConfigError("--set", assignment, "expected key.sub=value")
    key, text = assignment.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(
            "--set", key, f"value is not valid YAML ({exc.__class__.__name__})"
        ) from None
    parts = key.split(".")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError("--set", key, f"'{'.'.join(parts[: i + 1])}' is not an index")
            node = node[int(part)]
            continue
        if part not in node or node[part] is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, (dict, list)):
            raise ConfigError("--set", key, f"'{'.'.join(parts[: i + 1])}' is not a section")
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError("--set", key, f"'{last}' is not an index of a {len(node)}-list")
        node[int(last)] = value
    else:
        node[last] = value
    return key


def read_yaml_sections(path: Path) -> dict[str, Any]:
    """A config file's top-level mapping; a missing, unreadable or malformed file is one
    :class:`ConfigError` naming the file (and the line, for bad YAML)."""
    source = str(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found") from None
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "YAML"
        raise ConfigError(source, where, "not valid YAML") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(source, "", "top level must be a mapping of sections")
    return raw


M = TypeVar("M", bound=BaseModel)


def load_yaml_model(
    path: str | Path,
    model: type[M],
    overrides: list[str] | None = None,
    *,
    prepare: Callable[[dict[str, Any], Path], None] | None = None,
    drop: tuple[str, ...] = (),
) -> M:
    """Read a YAML config, apply ``--set`` overrides, then validate it as ``model``; every
    problem becomes one :class:`ConfigError` naming the file (or the ``--set`` that caused it)
    and the dotted key. ``prepare(raw, path)`` may check or rewrite the raw mapping first;
    ``drop`` removes union tags from reported keys. Run and training configs both load here."""
    path = Path(path)
    source = str(path)
    raw = read_yaml_sections(path)  # a fresh dict: the overrides may edit it
    set_keys = [apply_override(raw, a) for a in overrides or []]
    if prepare is not None:
        prepare(raw, path)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        key, msg = first_validation_error(exc, drop)
        culprit = next((k for k in set_keys if key == k or key.startswith(k + ".")), None)
        raise ConfigError(source if culprit is None else f"--set {culprit}", key, msg) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read, override and validate a run config; every problem becomes one ConfigError."""
    cfg = load_yaml_model(path, Config, overrides)
    cfg._source = str(path)
    return cfg


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML; loading it again, from any folder, gives the same config
    (``value.allowed_dirs`` are written absolute: they are relative to the config file)."""
    data = cfg.model_dump(mode="json")
    data["value"]["allowed_dirs"] = [
        str((cfg.base_dir / d).resolve()) for d in cfg.value.allowed_dirs
    ]
    if cfg.mpc.warm_start.path is not None:
        data["mpc"]["warm_start"]["path"] = str((cfg.base_dir / cfg.mpc.warm_start.path).resolve())
    return yaml.safe_dump(data, sort_keys=False)
