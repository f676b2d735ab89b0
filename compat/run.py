#!/usr/bin/env python3
"""Run the compatibility kit: every Celery example project on real Celery and/or on fastq.

    python3 compat/run.py --impl celery --record      # record compat/expected/<project>.json
    python3 compat/run.py --impl fastq                # run on fastq, compare with the recording
    python3 compat/run.py --impl both                 # run on both, compare them to each other
    python3 compat/run.py --impl fastq --project canvas --project retries

For each project: a copy in a temporary directory (for fastq, with the ``.py`` files rewritten by
:func:`to_fastq`), a private Redis database flushed beforehand, the worker started as
``<impl> -A <app> worker <worker_args>`` (``python -m celery`` / ``python -m fastq``), then the
project's ``scenario.py`` run to completion, which prints one JSON object of outcomes; then the
worker is stopped (SIGTERM, SIGKILL after a grace period).

Importable: :func:`run_projects` returns one :class:`Result` per project, e.g. for pytest::

    from compat.run import run_projects
    [result] = run_projects("fastq", ["first_steps"])
    assert result.ok, result.report()
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECTS = HERE / "projects"
EXPECTED = HERE / "expected"
LIB = HERE / "lib"
IMPLS = ("celery", "fastq")
DEFAULT_WORKER_ARGS = ["-c", "2", "-l", "warning"]
SCENARIO_TIMEOUT = 150.0   # seconds for one scenario run
STOP_GRACE = 10.0          # seconds between SIGTERM and SIGKILL of the worker
TAIL = 2000                # characters of stderr shown with an ERROR


# --------------------------------------------------------------------------- the substitution rule

_FROM = re.compile(r"\bfrom celery\b")
_IMPORT = re.compile(r"\bimport celery\b(?![.\w])")


def to_fastq(source: str) -> str:
    """The one rewrite that turns a Celery project into a fastq one (applied to ``.py`` files).

    ``from celery`` -> ``from fastq.compat`` (so ``from celery.exceptions import X`` becomes
    ``from fastq.compat.exceptions import X``) and ``import celery`` ->
    ``import fastq.compat as celery``. Relative imports such as ``from .celery import app`` are
    untouched (the ``\\b`` before ``from`` and the dot keep them apart).
    """
    source = _FROM.sub("from fastq.compat", source)
    return _IMPORT.sub("import fastq.compat as celery", source)


# --------------------------------------------------------------------------- projects and results

@dataclass
class Project:
    name: str
    path: Path
    app: str
    worker_args: list[str]
    worker: bool = True
    description: str = ""
    timeout: float = SCENARIO_TIMEOUT

    @classmethod
    def load(cls, path: Path) -> Project:
        meta = tomllib.loads((path / "project.toml").read_text())
        return cls(name=path.name, path=path, app=meta.get("app", "tasks"),
                   worker_args=list(meta.get("worker_args", DEFAULT_WORKER_ARGS)),
                   worker=bool(meta.get("worker", True)),
                   description=meta.get("description", ""),
                   timeout=float(meta.get("timeout", SCENARIO_TIMEOUT)))

    def worker_command(self, impl: str) -> list[str]:
        """``celery -A <app> worker ...`` (run as ``python -m celery`` so PATH does not matter)."""
        return [sys.executable, "-m", impl, "-A", self.app, "worker", *self.worker_args]


def all_projects() -> list[Project]:
    return [Project.load(p) for p in sorted(PROJECTS.iterdir())
            if p.is_dir() and (p / "project.toml").exists() and not p.name.startswith(("_", "."))]


@dataclass
class Run:
    """One project run on one implementation."""
    impl: str
    outcome: dict | None = None
    error: str | None = None          # why there is no (clean) outcome
    worker_stderr: str = ""
    scenario_stderr: str = ""
    seconds: float = 0.0


@dataclass
class Result:
    project: str
    impl: str                          # "celery", "fastq" or "both"
    status: str                        # "same", "different", "error", "recorded", "no-expected"
    runs: list[Run] = field(default_factory=list)
    diff: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in ("same", "recorded")

    def report(self) -> str:
        line = f"{self.project:<22} {self.impl:<7} {self.status.upper() if not self.ok else self.status}" \
               f" ({self.seconds:.1f}s)"
        lines = [line]
        if self.status == "different":
            lines += [f"    {d}" for d in self.diff[:12]]
            if len(self.diff) > 12:
                lines.append(f"    ... {len(self.diff) - 12} more")
        elif self.status == "error":
            for run in self.runs:
                if run.error is None:
                    continue
                lines.append(f"    [{run.impl}] {run.error}")
                if run.scenario_stderr.strip():
                    lines.append(f"    [{run.impl}] scenario stderr tail:")
                    lines += ["      " + x for x in run.scenario_stderr[-TAIL:].splitlines()]
                if run.worker_stderr.strip():
                    lines.append(f"    [{run.impl}] worker stderr tail:")
                    lines += ["      " + x for x in run.worker_stderr[-TAIL:].splitlines()]
        elif self.status == "no-expected":
            lines.append("    no compat/expected file: run --impl celery --record first")
        return "\n".join(lines)


# --------------------------------------------------------------------------- comparing outcomes

def diff(expected, actual, path: str = "") -> list[str]:
    """Human-readable differences between two JSON values (empty: the same)."""
    if _is_error(actual) and not _is_error(expected):
        return [f"{path or '<root>'}: raised {actual['__error__']} (expected {_short(expected)})"]
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = []
        for key in sorted(set(expected) | set(actual)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in actual:
                out.append(f"{sub}: missing (expected {_short(expected[key])})")
            elif key not in expected:
                out.append(f"{sub}: unexpected {_short(actual[key])}")
            else:
                out += diff(expected[key], actual[key], sub)
        return out
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        out = []
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            out += diff(e, a, f"{path}[{i}]")
        return out
    if expected == actual and type(expected) is type(actual):
        return []
    return [f"{path or '<root>'}: expected {_short(expected)}, got {_short(actual)}"]


def _is_error(value) -> bool:
    return isinstance(value, dict) and set(value) == {"__error__"}


def _short(value, limit: int = 160) -> str:
    text = json.dumps(value, sort_keys=True, default=repr)
    return text if len(text) <= limit else text[:limit] + "..."


def kit_errors(outcome, path: str = "") -> list[str]:
    """Checks that raised unexpectedly (recorded by compatkit as {"__error__": name})."""
    if isinstance(outcome, dict):
        if set(outcome) == {"__error__"}:
            return [f"{path}: {outcome['__error__']}"]
        return [e for k, v in outcome.items() for e in kit_errors(v, f"{path}.{k}" if path else k)]
    return []


# --------------------------------------------------------------------------- the Redis server

class Broker:
    """A private Redis server for the whole run; one database per project, flushed before use."""

    def __init__(self) -> None:
        self.server = None
        self.url = os.environ.get("COMPAT_REDIS_URL")  # use an existing server if given

    def __enter__(self) -> Broker:
        if self.url is None:
            try:  # the runner may use fastq; projects do not
                from fastq.testing import RedisServer
            except Exception:  # noqa: BLE001 - fastq mid-edit: Celery runs must not depend on it
                RedisServer = _PlainRedisServer
            self.server = RedisServer()
            self.server.start()
            self.url = self.server.url
        self.url = self.url.rstrip("/")
        self.base = re.sub(r"/\d+$", "", self.url)
        return self

    def __exit__(self, *exc) -> None:
        if self.server is not None:
            self.server.cleanup()

    def database(self, number: int) -> str:
        import redis
        url = f"{self.base}/{number}"
        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()
        return url


class _PlainRedisServer:
    """Fallback when fastq.testing cannot be imported: redis-server/valkey-server from PATH."""

    def __init__(self) -> None:
        import socket
        self.exe = shutil.which("redis-server") or shutil.which("valkey-server")
        if self.exe is None:
            raise RuntimeError("no redis-server or valkey-server on PATH (or set COMPAT_REDIS_URL)")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.dir = tempfile.mkdtemp(prefix="compat-redis-")
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None

    def start(self) -> None:
        import redis
        self.proc = subprocess.Popen([self.exe, "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--dir", self.dir, "--save", "", "--appendonly", "no"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def cleanup(self) -> None:
        if self.proc is not None:
            _stop(self.proc, grace=5)
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------- running one project

def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _stop(proc: subprocess.Popen, grace: float = STOP_GRACE) -> None:
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:  # whatever is left of the process group (pool children, an embedded beat)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def run_one(project: Project, impl: str, broker_url: str, workdir: Path) -> Run:
    """Copy the project (rewritten for fastq), start its worker, run its scenario."""
    started = time.monotonic()
    run = Run(impl=impl)
    dest = workdir / f"{impl}-{project.name}"
    shutil.copytree(project.path, dest,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "celerybeat-schedule*"))
    if impl == "fastq":
        for py in dest.rglob("*.py"):
            py.write_text(to_fastq(py.read_text()))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "FASTQ_BROKER"))}
    env.update(COMPAT_BROKER_URL=broker_url, COMPAT_IMPL=impl, PYTHONUNBUFFERED="1",
               PYTHONDONTWRITEBYTECODE="1")
    extra = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join([str(dest), *([extra] if extra else [])])
    scenario_env = dict(env, PYTHONPATH=os.pathsep.join([str(dest), str(LIB),
                                                         *([extra] if extra else [])]),
                        COMPAT_SCENARIO_DEADLINE=str(max(1.0, project.timeout - 3)))

    worker_err = dest.parent / f"{dest.name}.worker.log"
    scen_out = dest.parent / f"{dest.name}.scenario.out"
    scen_err = dest.parent / f"{dest.name}.scenario.err"
    worker = None
    try:
        if project.worker:
            with open(worker_err, "wb") as err:
                worker = subprocess.Popen(project.worker_command(impl), cwd=dest, env=env,
                                          stdin=subprocess.DEVNULL, stdout=err,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        with open(scen_out, "wb") as out, open(scen_err, "wb") as err:
            scenario = subprocess.Popen([sys.executable, "scenario.py"], cwd=dest, env=scenario_env,
                                        stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                        start_new_session=True)
        deadline = time.monotonic() + project.timeout
        while scenario.poll() is None:
            if worker is not None and worker.poll() is not None:
                run.error = f"worker exited with code {worker.returncode} during the scenario"
                break
            if time.monotonic() > deadline:
                run.error = f"scenario did not finish within {project.timeout:.0f}s"
                break
            time.sleep(0.05)
        if scenario.poll() is None:
            _stop(scenario, grace=1.0)
        elif scenario.returncode != 0 and run.error is None:
            run.error = f"scenario exited with code {scenario.returncode}"
    finally:
        if worker is not None:
            _stop(worker)
    run.worker_stderr = _read(worker_err)
    run.scenario_stderr = _read(scen_err)
    if run.error is None:
        lines = [x for x in _read(scen_out).splitlines() if x.strip()]
        try:
            run.outcome = json.loads(lines[-1])
            if not isinstance(run.outcome, dict):
                raise ValueError("not a JSON object")
        except (IndexError, ValueError) as exc:
            run.error = f"scenario printed no JSON object ({exc})"
    run.seconds = time.monotonic() - started
    return run


# --------------------------------------------------------------------------- the kit

def expected_path(name: str) -> Path:
    return EXPECTED / f"{name}.json"


def run_projects(impl: str, names: list[str] | None = None, record: bool = False,
                 echo=None, show: bool = False) -> list[Result]:
    """Run the named projects (default: all) on ``impl`` ("celery", "fastq" or "both").

    celery/fastq: the outcome is compared with compat/expected/<project>.json (``record=True``
    with celery: written there instead). both: Celery's and fastq's outcomes are compared.
    ``echo`` (e.g. ``print``) receives each project's report line as soon as it is known.
    """
    if impl not in (*IMPLS, "both"):
        raise ValueError(f"impl must be celery, fastq or both, not {impl!r}")
    if record and impl != "celery":
        raise ValueError("only real Celery records expected outcomes (--impl celery --record)")
    projects = all_projects()
    if names:
        by_name = {p.name: p for p in projects}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ValueError(f"unknown project(s): {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(by_name))}")
        projects = [by_name[n] for n in names]
    numbers = {p.name: i for i, p in enumerate(all_projects())}
    results = []
    with Broker() as broker, tempfile.TemporaryDirectory(prefix="fastq-compat-") as tmp:
        for project in projects:
            started = time.monotonic()
            impls = IMPLS if impl == "both" else (impl,)
            runs = []
            for which in impls:
                url = broker.database(1 + numbers[project.name] % 15)
                runs.append(run_one(project, which, url, Path(tmp)))
            result = _judge(project, impl, runs, record)
            result.seconds = time.monotonic() - started
            results.append(result)
            if echo:
                echo(result.report())
                for run in runs if show else ():
                    echo(f"    [{run.impl}] outcome: {json.dumps(run.outcome, sort_keys=True)}")
    return results


def _judge(project: Project, impl: str, runs: list[Run], record: bool) -> Result:
    result = Result(project.name, impl, "error", runs)
    for run in runs:
        if run.error is None and run.impl == "celery":
            errors = kit_errors(run.outcome)   # Celery itself must pass every check cleanly
            if errors:
                run.error = "checks raised on Celery: " + "; ".join(errors)
    if any(run.error for run in runs if run.impl == "celery" or impl != "both"):
        return result
    if impl == "both":
        celery_run, fastq_run = runs
        if fastq_run.error:
            return result
        result.diff = diff(celery_run.outcome, fastq_run.outcome)
    else:
        [run] = runs
        path = expected_path(project.name)
        if record:
            EXPECTED.mkdir(exist_ok=True)
            path.write_text(json.dumps(run.outcome, indent=2, sort_keys=True) + "\n")
            result.status = "recorded"
            return result
        if not path.exists():
            result.status = "no-expected"
            return result
        result.diff = diff(json.loads(path.read_text()), run.outcome)
    result.status = "different" if result.diff else "same"
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impl", choices=[*IMPLS, "both"], default="both")
    parser.add_argument("--project", action="append", dest="projects", metavar="NAME",
                        help="run only this project (repeatable); default: all")
    parser.add_argument("--record", action="store_true",
                        help="with --impl celery: write compat/expected/<project>.json")
    parser.add_argument("--show", action="store_true", help="also print each run's outcome JSON")
    parser.add_argument("--list", action="store_true", help="list the projects and exit")
    args = parser.parse_args(argv)
    if args.list:
        for p in all_projects():
            print(f"{p.name:<22} {p.description}")
        return 0
    if args.record and args.impl != "celery":
        parser.error("--record needs --impl celery")
    started = time.monotonic()
    try:
        results = run_projects(args.impl, args.projects, record=args.record,
                               echo=lambda line: print(line, flush=True), show=args.show)
    except ValueError as exc:
        parser.error(str(exc))
    bad = [r for r in results if not r.ok]
    print(f"{len(results) - len(bad)} passed, {len(bad)} failed"
          f"  ({args.impl}, {time.monotonic() - started:.0f}s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
