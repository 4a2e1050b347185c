"""`-p` specs, as Docker writes them: every accepted form gives an exact PortRequest, every refusal
is one InvalidInput line naming its reason."""

import re
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from nsnet.errors import InvalidInput
from nsnet.portspec import PROTOCOLS, PortRequest, parse, parse_all

LOOPBACK = IPv4Address("127.0.0.1")


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("80", PortRequest(range(80, 81))),
        ("8080:80", PortRequest(range(80, 81), host_ports=range(8080, 8081))),
        ("127.0.0.1:8090:90", PortRequest(range(90, 91), host_ip=LOOPBACK, host_ports=range(8090, 8091))),
        ("127.0.0.1::80", PortRequest(range(80, 81), host_ip=LOOPBACK)),
        ("9000-9010:9000-9010", PortRequest(range(9000, 9011), host_ports=range(9000, 9011))),
        ("8000-8010:80", PortRequest(range(80, 81), host_ports=range(8000, 8011))),
        ("80-82", PortRequest(range(80, 83))),
        ("53/udp", PortRequest(range(53, 54), "udp")),
        ("5353:53/udp", PortRequest(range(53, 54), "udp", host_ports=range(5353, 5354))),
        ("127.0.0.1::53/udp", PortRequest(range(53, 54), "udp", host_ip=LOOPBACK)),
        ("132/sctp", PortRequest(range(132, 133), "sctp")),
        ("80/tcp", PortRequest(range(80, 81))),
        ("1:65535", PortRequest(range(65535, 65536), host_ports=range(1, 2))),
        ("10.0.0.1:80-81:90-91", PortRequest(range(90, 92), host_ip=IPv4Address("10.0.0.1"),
                                             host_ports=range(80, 82))),
        ("::80", PortRequest(range(80, 81))),
    ],
)
def test_accepted_forms(spec, expected):
    assert parse(spec) == expected


def test_only_a_host_range_to_one_sandbox_port_picks_one():
    assert [parse(s).pick_one for s in ("8000-8010:80", "80", "8080:80", "9000-9010:9000-9010", "127.0.0.1::80")] == [
        True, False, False, False, False,
    ]


def test_0_0_0_0_and_brackets_are_every_address_of_one_family_as_docker_writes_them():
    assert parse("0.0.0.0:8080:80").host_ip == IPv4Address(0)
    assert parse("[::]:8080:80").host_ip == IPv6Address(0)
    assert parse("8080:80").host_ip is None  # every address of every family the network has
    assert parse("[2001:db8::5]:8082:82/udp") == PortRequest(range(82, 83), "udp", IPv6Address("2001:db8::5"),
                                                             range(8082, 8083))
    assert parse("[fd00::5]::82") == PortRequest(range(82, 83), "tcp", IPv6Address("fd00::5"), None)


def test_parse_all_keeps_the_order():
    assert parse_all(["8080:80", "53/udp"]) == [parse("8080:80"), parse("53/udp")]
    assert parse_all(()) == []


@pytest.mark.parametrize(
    "spec, field, message",
    [
        ("0", "publish", "invalid publish '0': sandbox port 0 is outside 1-65535"),
        ("8080:0", "publish", "invalid publish '8080:0': sandbox port 0 is outside 1-65535"),
        ("0:80", "publish", "invalid publish '0:80': host port 0 is outside 1-65535"),
        ("65536", "publish", "invalid publish '65536': sandbox port 65536 is outside 1-65535"),
        ("80-65536", "publish", "invalid publish '80-65536': sandbox port 65536 is outside 1-65535"),
        ("99999:80", "publish", "invalid publish '99999:80': host port 99999 is outside 1-65535"),
        ("90-80", "publish", "invalid publish '90-80': sandbox port range 90-80 ends before it starts"),
        ("9010-9000:80", "publish", "invalid publish '9010-9000:80': host port range 9010-9000 ends before it starts"),
        ("8000-8001:80-82", "publish",
         "invalid publish '8000-8001:80-82': host and sandbox port ranges must have the same length"),
        ("8080:80-81", "publish",
         "invalid publish '8080:80-81': host and sandbox port ranges must have the same length"),
        ("80/icmp", "publish", "invalid publish '80/icmp': protocol 'icmp' is not one of tcp, udp, sctp"),
        ("80/TCP", "publish", "invalid publish '80/TCP': protocol 'TCP' is not one of tcp, udp, sctp"),
        ("80/", "publish", "invalid publish '80/': protocol '' is not one of tcp, udp, sctp"),
        ("1:2:3:4", "publish", "invalid publish '1:2:3:4': expected [HOST_IP:][HOST_PORT:]SANDBOX_PORT[/PROTOCOL] (an IPv6 address goes in brackets)"),
        ("::1:80:80", "publish",
         "invalid publish '::1:80:80': expected [HOST_IP:][HOST_PORT:]SANDBOX_PORT[/PROTOCOL] (an IPv6 address goes in brackets)"),
        ("[::1]:80:80", "publish", "invalid publish '[::1]:80:80': the kernel cannot forward IPv6 loopback ([::1]) "
                                   "traffic to a sandbox (IPv6 has no route_localnet); publish on 127.0.0.1 or on "
                                   "another address"),
        ("[::1:80:80", "publish", "invalid publish '[::1:80:80': expected [IPV6]:[HOST_PORT]:SANDBOX_PORT[/PROTOCOL]"),
        ("[fd00::1]:80", "publish", "invalid publish '[fd00::1]:80': expected [IPV6]:[HOST_PORT]:SANDBOX_PORT[/PROTOCOL]"),
        ("[]:80:80", "publish", "invalid publish '[]:80:80': expected [IPV6]:[HOST_PORT]:SANDBOX_PORT[/PROTOCOL]"),
        ("[10.0.0.1]:80:80", "publish host address",
         "invalid publish host address '10.0.0.1': is an IPv4 address, not an IPv6 one"),
        ("[fe80::1%eth0]:80:80", "publish host address",
         "invalid publish host address 'fe80::1%eth0': must not carry a zone (%...): nsnet's addresses are global"),
        ("http", "publish", "invalid publish 'http': sandbox port 'http' is not a port or a range of ports"),
        ("web:80", "publish", "invalid publish 'web:80': host port 'web' is not a port or a range of ports"),
        ("127.0.0.1:80", "publish",
         "invalid publish '127.0.0.1:80': host port '127.0.0.1' is not a port or a range of ports"),
        ("", "publish", "invalid publish '': sandbox port '' is not a port or a range of ports"),
        ("80-", "publish", "invalid publish '80-': sandbox port '80-' is not a port or a range of ports"),
        ("-80", "publish", "invalid publish '-80': sandbox port '-80' is not a port or a range of ports"),
        (" 80", "publish", "invalid publish ' 80': sandbox port ' 80' is not a port or a range of ports"),
        ("000080", "publish", "invalid publish '000080': sandbox port '000080' is not a port or a range of ports"),
        ("８０", "publish", "invalid publish '８０': sandbox port '８０' is not a port or a range of ports"),
        ("²", "publish", "invalid publish '²': sandbox port '²' is not a port or a range of ports"),
        ("8080:٨٠", "publish", "invalid publish '8080:٨٠': sandbox port '٨٠' is not a port or a range of ports"),
        ("80\n", "publish", "invalid publish '80\\n': sandbox port '80\\n' is not a port or a range of ports"),
        ("1.2.3:80:80", "publish host address", "invalid publish host address '1.2.3': is not an IPv4 address"),
        ("localhost:80:80", "publish host address",
         "invalid publish host address 'localhost': is not an IPv4 address"),
    ],
)
def test_refusals_name_the_reason_on_one_line(spec, field, message):
    with pytest.raises(InvalidInput) as caught:
        parse(spec)
    assert caught.value.field == field
    assert str(caught.value) == message


def test_parse_all_refuses_the_first_bad_spec():
    with pytest.raises(InvalidInput) as caught:
        parse_all(["8080:80", "0", "x"])
    assert caught.value.value == "0"


SPEC_ALPHABET = "0123456789:-/.[]tcpudsa８²"
# Independent oracle: Docker's grammar as one regular expression, values checked with integers.
OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
SPEC = re.compile(
    rf"(?:(?:(?P<ip>{OCTET}\.{OCTET}\.{OCTET}\.{OCTET})?:)?(?:(?P<h1>[0-9]{{1,5}})(?:-(?P<h2>[0-9]{{1,5}}))?)?:)?"
    r"(?P<s1>[0-9]{1,5})(?:-(?P<s2>[0-9]{1,5}))?(?:/(?P<proto>tcp|udp|sctp))?")


def oracle(text: str) -> PortRequest | None:
    match = SPEC.fullmatch(text)
    if match is None:
        return None
    ports = {k: int(v) for k, v in match.groupdict().items() if v is not None and k != "ip" and k != "proto"}
    if any(not 1 <= port <= 65535 for port in ports.values()):
        return None
    sandbox = (ports["s1"], ports.get("s2", ports["s1"]))
    host = (ports["h1"], ports.get("h2", ports["h1"])) if "h1" in ports else None
    if sandbox[0] > sandbox[1] or (host is not None and host[0] > host[1]):
        return None
    if host is not None and host[1] - host[0] != sandbox[1] - sandbox[0] and sandbox[0] != sandbox[1]:
        return None
    ip = match["ip"]
    return PortRequest(range(sandbox[0], sandbox[1] + 1), match["proto"] or "tcp",
                       IPv4Address(ip) if ip else None,
                       range(host[0], host[1] + 1) if host else None)


SPEC_PIECES = st.lists(st.sampled_from(["80", "8080", "1", "65535", "65536", "0", "00080", "-", ":", "/tcp", "/udp",
                                        "/sctp", "/icmp", "127.0.0.1", "0.0.0.0", "1.2.3", "[::1]", "9000-9002", " ",
                                        "[::]", "[fd00::5]"]),
                       max_size=6).map("".join)


@given(st.one_of(st.text(), st.text(alphabet=SPEC_ALPHABET, max_size=24), SPEC_PIECES))
@example("[")
@example("1.2.3.4:::80")
@example("\u2028")
@example("127.0.0.1:8000-8010:80/udp")
@example("::80")
@example("0.0.0.0::80-81")
def test_arbitrary_text_parses_exactly_as_the_oracle_says(text):
    if text.startswith("["):  # an IPv6 host address (the oracle speaks IPv4): IPv6 or refused
        try:
            assert parse(text).host_ip.version == 6
        except InvalidInput as err:
            assert err.field in ("publish", "publish host address") and len(str(err).splitlines()) == 1
        return
    expected = oracle(text)
    if expected is None:
        with pytest.raises(InvalidInput) as caught:
            parse(text)
        assert caught.value.field in ("publish", "publish host address")
        assert len(str(caught.value).splitlines()) == 1
    else:
        assert parse(text) == expected


def port_ranges() -> st.SearchStrategy[range]:
    return st.integers(1, 65535).flatmap(lambda first: st.integers(first, min(first + 50, 65535)).map(
        lambda last: range(first, last + 1)))


def as_text(ports: range) -> str:
    return str(ports.start) if len(ports) == 1 else f"{ports.start}-{ports[-1]}"


@st.composite
def requests(draw) -> PortRequest:
    sandbox_ports = draw(port_ranges())
    host_ports = draw(st.none() | (port_ranges() if len(sandbox_ports) == 1 else st.integers(1, 65536 - len(
        sandbox_ports)).map(lambda first: range(first, first + len(sandbox_ports)))))
    host_ip = draw(st.none() | st.ip_addresses(v=4).filter(lambda ip: ip != IPv4Address(0)))
    return PortRequest(sandbox_ports, draw(st.sampled_from(PROTOCOLS)), host_ip, host_ports)


def spec_of(request: PortRequest, write_tcp: bool) -> str:
    text = as_text(request.sandbox_ports)
    if request.host_ports is not None or request.host_ip is not None:
        text = f"{as_text(request.host_ports) if request.host_ports else ''}:{text}"
    if request.host_ip is not None:
        text = f"{request.host_ip}:{text}"
    return text if request.protocol == "tcp" and not write_tcp else f"{text}/{request.protocol}"


@given(requests(), st.booleans())
def test_a_formatted_spec_parses_back_to_its_values(request, write_tcp):
    assert parse(spec_of(request, write_tcp)) == request
