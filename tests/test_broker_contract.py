"""Every broker implements every method of the broker Protocols, with a compatible signature.

The Protocols in fastq/broker/base.py name every method any module calls on a broker; a method
a caller needs but the Protocol does not name, or a broker that drifts from it, fails here.
"""
from __future__ import annotations

import inspect

import pytest

from fastq.broker.base import Control, Graphs, ResultStore, Transport
from fastq.broker.memory import MemoryBroker
from fastq.broker.redis import RedisBroker

PROTOCOLS = (Transport, ResultStore, Control, Graphs)


def _methods(protocol: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(value) for name, value in vars(protocol).items()
            if callable(value) and not name.startswith("_")}


def _compatible(required: inspect.Signature, given: inspect.Signature) -> str | None:
    """Why ``given`` cannot stand in for ``required`` (None when it can): every parameter is
    there by name, kind and default, and extra ones are optional."""
    have = given.parameters
    for name, param in required.parameters.items():
        other = have.get(name)
        if other is None:
            return f"no parameter {name!r}"
        if other.kind != param.kind:
            return f"{name!r} is {other.kind.description}, not {param.kind.description}"
        if param.default is not inspect.Parameter.empty and other.default != param.default:
            return f"{name!r} defaults to {other.default!r}, not {param.default!r}"
        if param.default is inspect.Parameter.empty and other.default is not inspect.Parameter.empty:
            continue  # an implementation may make a parameter optional
    for name, other in have.items():
        if name not in required.parameters and other.default is inspect.Parameter.empty \
                and other.kind not in (other.VAR_POSITIONAL, other.VAR_KEYWORD):
            return f"extra required parameter {name!r}"
    return None


@pytest.mark.parametrize("broker_class", [RedisBroker, MemoryBroker])
@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.__name__)
def test_broker_implements_every_protocol_method(broker_class, protocol):
    problems = []
    for name, required in _methods(protocol).items():
        impl = getattr(broker_class, name, None)
        if impl is None:
            problems.append(f"{name}: missing")
            continue
        why = _compatible(required, inspect.signature(impl))
        if why:
            problems.append(f"{name}: {why}")
    assert not problems, f"{broker_class.__name__} vs {protocol.__name__}: {problems}"


def test_the_protocols_name_every_public_broker_method():
    """The other way round: a public broker method no Protocol names is drift too."""
    named = set().union(*(_methods(p) for p in PROTOCOLS))
    extra = {name for name, value in vars(RedisBroker).items()
             if callable(value) and not name.startswith("_") and name not in named
             and not isinstance(value, type)}
    assert not extra, f"RedisBroker methods no Protocol names: {sorted(extra)}"


def test_the_contract_check_itself_fails_on_drift():
    def needs(self, queue: str, level: int = 2) -> None: ...

    def renamed(self, q: str, level: int = 2) -> None: ...

    def other_default(self, queue: str, level: int = 3) -> None: ...

    def more_required(self, queue: str, extra: int, level: int = 2) -> None: ...

    want = inspect.signature(needs)
    assert _compatible(want, inspect.signature(needs)) is None
    assert "no parameter 'queue'" in _compatible(want, inspect.signature(renamed))
    assert "defaults to 3" in _compatible(want, inspect.signature(other_default))
    assert "extra required" in _compatible(want, inspect.signature(more_required))
