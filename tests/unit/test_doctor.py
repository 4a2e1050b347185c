from ipaddress import IPv4Address, IPv4Network

from nsnet.doctor import BaseChain, HostFacts, diagnose
from nsnet.model import Subnet, Network, PortMapping
from nsnet.publish import Listener

APP = Network(id="a" * 64, name="app", bridge="nsbr-aaaaaaaaaa", subnets=(Subnet(IPv4Network("10.31.0.0/24"), IPv4Address("10.31.0.1")),),)
HEALTHY = HostFacts(ip_forward="1", bridge_nf_call_iptables=None,
                    base_chains=(BaseChain("inet", "nsnet", "forward", "forward", "accept"),),
                    routes=((IPv4Network("10.31.0.0/24"), "nsbr-aaaaaaaaaa"),))


def checks(facts: HostFacts, published=()) -> dict[str, str]:
    return {f.check: f.severity for f in diagnose(facts, [APP], list(published))}


def test_a_healthy_host_has_no_findings():
    assert diagnose(HEALTHY, [APP], []) == []


def test_ip_forward_off_is_a_problem_only_when_networks_exist():
    facts = HostFacts(ip_forward="0", bridge_nf_call_iptables=None)
    assert checks(facts) == {"ip-forward": "problem"}
    assert diagnose(facts, [], []) == []


def test_a_foreign_forward_drop_policy_is_a_problem_and_nsnets_own_chains_are_not():
    facts = HostFacts(ip_forward="1", bridge_nf_call_iptables=None, base_chains=(
        BaseChain("ip", "filter", "FORWARD", "forward", "drop"),
        BaseChain("ip", "filter", "INPUT", "input", "drop"),
        BaseChain("inet", "nsnet", "forward", "forward", "drop"),
    ))
    (finding,) = diagnose(facts, [APP], [])
    assert (finding.check, finding.severity, finding.details) == (
        "forward-policy", "problem", ("table ip filter, chain FORWARD",))
    assert "bridged traffic" not in finding.reason


def test_with_br_netfilter_a_foreign_drop_also_breaks_bridged_traffic():
    facts = HostFacts(ip_forward="1", bridge_nf_call_iptables="1",
                      base_chains=(BaseChain("ip", "filter", "FORWARD", "forward", "drop"),))
    findings = {f.check: f for f in diagnose(facts, [APP], [])}
    assert set(findings) == {"forward-policy", "br-netfilter"}
    assert "bridged traffic between sandboxes" in findings["forward-policy"].reason
    assert findings["br-netfilter"].severity == "warning"


def test_legacy_iptables_filter_is_a_warning():
    assert checks(HostFacts(ip_forward="1", bridge_nf_call_iptables="0", legacy_iptables_tables=("nat", "filter"))) \
        == {"legacy-iptables": "warning"}
    assert checks(HostFacts(ip_forward="1", bridge_nf_call_iptables="0", legacy_iptables_tables=("nat",))) == {}


def test_a_host_listener_on_a_published_port_is_named():
    facts = HostFacts(ip_forward="1", bridge_nf_call_iptables=None,
                      listeners=(Listener("tcp", IPv4Address("127.0.0.1"), 8090), Listener("udp", None, 8080)))
    published = [("web", PortMapping(None, 8080, 80, "tcp")), ("web", PortMapping(IPv4Address("127.0.0.1"), 8090, 90))]
    (finding,) = diagnose(facts, [APP], published)
    assert finding.details == ("127.0.0.1:8090/tcp (published by web; a host process is bound to 127.0.0.1:8090)",)


def test_routes_overlapping_a_subnet_elsewhere_than_its_bridge():
    facts = HostFacts(ip_forward="1", bridge_nf_call_iptables=None, routes=(
        (IPv4Network("10.31.0.0/24"), "nsbr-aaaaaaaaaa"), (IPv4Network("10.0.0.0/8"), "eth0"),
        (IPv4Network("192.168.0.0/16"), "eth1")))
    (finding,) = diagnose(facts, [APP], [])
    assert finding.details == ("network app (10.31.0.0/24) and route 10.0.0.0/8 on eth0",)


def test_missing_kernel_features_are_listed():
    facts = HostFacts(ip_forward="1", bridge_nf_call_iptables=None, missing_features=("bridge: refused",))
    (finding,) = diagnose(facts, [APP], [])
    assert (finding.check, finding.details) == ("kernel-features", ("bridge: refused",))


def test_every_finding_has_a_reason_and_a_fix_on_one_line():
    facts = HostFacts(ip_forward="0", bridge_nf_call_iptables="1", legacy_iptables_tables=("filter",),
                      base_chains=(BaseChain("ip", "filter", "FORWARD", "forward", "drop"),),
                      listeners=(Listener("tcp", None, 8080),), routes=((IPv4Network("10.0.0.0/8"), "eth0"),),
                      missing_features=("x",))
    findings = diagnose(facts, [APP], [("web", PortMapping(None, 8080, 80))])
    assert len(findings) == 7
    for finding in findings:
        assert finding.reason and finding.fix
        assert "\n" not in finding.reason + finding.fix
        assert finding.to_dict()["details"] == list(finding.details)


def test_a_foreign_input_drop_is_a_problem_for_dns_networks_with_the_rule_that_fixes_it():
    from nsnet.record import replace

    named = replace(APP, dns=True)
    moved = replace(APP, id="b" * 64, name="vault", bridge="nsbr-bbbbbbbbbb", dns=True, dns_port=10053,
                    subnets=(Subnet(IPv4Network("10.32.0.0/24"), IPv4Address("10.32.0.1")),))
    firewalld = BaseChain("inet", "firewalld", "filter_INPUT", "input", "accept", ends_in_drop=True)
    ufw = BaseChain("ip", "filter", "INPUT", "input", "drop")
    facts = replace(HEALTHY, base_chains=(firewalld, ufw, BaseChain("inet", "other", "in", "input", "accept")))
    findings = {f.check: f for f in diagnose(facts, [named, moved], [])}
    assert set(findings) == {"dns-input", "dns-port"}
    rule = ('iifname { "nsbr-aaaaaaaaaa", "nsbr-bbbbbbbbbb" } meta l4proto { tcp, udp } th dport { 53, 10053 } '
            "accept")
    assert findings["dns-input"].details == (f"nft insert rule inet firewalld filter_INPUT {rule}",
                                             f"nft insert rule ip filter INPUT {rule}")
    assert findings["dns-port"].details == ("network vault: answers on port 10053 of 10.32.0.1",)
    assert diagnose(facts, [APP], []) == []  # no DNS network: nothing asks the host


def test_a_chain_ends_in_a_drop_only_when_its_last_rule_drops_everything():
    from nsnet.kernel.observe import _drops_everything

    assert _drops_everything([{"counter": None}, {"reject": {"type": "icmpx", "expr": "admin-prohibited"}}])
    assert _drops_everything([{"drop": None}])
    assert not _drops_everything([{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "lo"}},
                                  {"drop": None}])
    assert not _drops_everything([{"accept": None}]) and not _drops_everything([])


def test_a_missing_network_driver_is_a_warning_apart_from_what_nsnet_needs() -> None:
    from nsnet.doctor import HostFacts, diagnose

    facts = HostFacts(ip_forward="1", bridge_nf_call_iptables=None,
                      missing_features=("bridge: refused", "ipvlan (network create --driver ipvlan): not supported"))
    found = {f.check: (f.severity, f.details) for f in diagnose(facts, [], [])}
    assert found == {"kernel-features": ("problem", ("bridge: refused",)),
                     "kernel-drivers": ("warning", ("ipvlan (network create --driver ipvlan): not supported",))}
