"""nsnet.record keeps the promises of the frozen dataclasses it replaced."""

from __future__ import annotations

import pytest

from nsnet.record import record, replace, values


class Base:
    def describe(self) -> str:
        return f"{type(self).__name__} {values(self)}"


@record
class Port(Base):
    number: int
    protocol: str = "tcp"
    labels: tuple[str, ...] = ()


@record
class Other(Base):
    number: int
    protocol: str = "tcp"
    labels: tuple[str, ...] = ()


@record
class Named(Port):
    name: str = ""


def test_fields_defaults_and_arguments() -> None:
    assert values(Port(80)) == {"number": 80, "protocol": "tcp", "labels": ()}
    assert values(Port(53, "udp")) == values(Port(protocol="udp", number=53))
    assert values(Named(1, name="web")) == {"number": 1, "protocol": "tcp", "labels": (), "name": "web"}
    assert Port(80).describe() == "Port {'number': 80, 'protocol': 'tcp', 'labels': ()}"
    for call, message in ((lambda: Port(), "missing the argument 'number'"),
                          (lambda: Port(1, "tcp", (), 4), "takes 3 arguments, 4 given"),
                          (lambda: Port(1, number=2), "a repeated argument 'number'"),
                          (lambda: Port(1, colour="red"), "an unexpected argument 'colour'")):
        with pytest.raises(TypeError, match=message):
            call()


def test_equality_hash_and_repr_are_a_frozen_dataclass_s() -> None:
    assert Port(80) == Port(80, "tcp") and Port(80) != Port(81)
    assert Port(80) != Other(80)  # same fields, another type
    assert len({Port(80), Port(80), Port(81)}) == 2
    assert repr(Named(1, "udp", ("a",), "dns")) == "Named(number=1, protocol='udp', labels=('a',), name='dns')"


def test_frozen_and_replace() -> None:
    port = Port(80)
    with pytest.raises(AttributeError, match="cannot change field 'number': Port is frozen"):
        port.number = 81  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del port.protocol
    assert replace(port, protocol="udp") == Port(80, "udp") and port == Port(80)
    with pytest.raises(TypeError, match="Port has no field 'colour'"):
        replace(port, colour="red")


def test_a_field_without_a_default_may_not_follow_one_with() -> None:
    with pytest.raises(TypeError, match="field 'name' without a default follows one with"):
        @record
        class Broken:
            number: int = 0
            name: str
