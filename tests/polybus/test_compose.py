"""docker-compose.yml: every service's command is a real `polybus` subcommand with real flags,
and the `cluster` profile makes a 3+3 Redis Cluster of its six nodes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from polybus.cli import build_parser


ROOT = Path(__file__).resolve().parents[2]


def test_compose_commands_parse_with_the_cli() -> None:
    """Each polybus service's command parses, and the feeder has a healthcheck and restarts."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    default = {name for name, service in services.items() if "profiles" not in service}
    assert default == {"redis", "feeder", "consumer"}
    assert "healthcheck" in services["redis"]
    parser = build_parser()
    for name in ("feeder", "consumer"):
        service = services[name]
        args = parser.parse_args(service["command"])
        assert callable(args.func), name
        assert service["restart"] == "unless-stopped"
    health = services["feeder"]["healthcheck"]["test"]
    assert health[:3] == ["CMD", "polybus", "health"]
    assert callable(parser.parse_args(health[2:]).func)


def test_the_cluster_profile_joins_its_six_nodes_and_feeds_one() -> None:
    """Under `--profile cluster`: six cluster-enabled nodes on fixed addresses, an init that
    joins exactly those as 3 primaries + 3 replicas after they are healthy, and a feeder (a
    real `polybus feed`) that starts once the cluster is formed, given one node's URL."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    profiled = {name for name, service in services.items() if "profiles" in service}
    nodes = [f"redis-node-{i}" for i in range(6)]
    assert profiled == {*nodes, "redis-cluster-init", "feeder-cluster"}
    assert all(services[name]["profiles"] == ["cluster"] for name in profiled)
    addresses = []
    for name in nodes:
        command = services[name]["command"]
        assert command[0] == "redis-server"
        assert command[command.index("--cluster-enabled") + 1] == "yes"
        assert "healthcheck" in services[name]
        addresses.append(services[name]["networks"]["cluster"]["ipv4_address"])
    init = services["redis-cluster-init"]
    script = " ".join(init["command"])
    created = script[script.index("--cluster create") :].split()[2:8]
    assert created == [f"{a}:6379" for a in addresses]
    assert "--cluster-replicas 1 --cluster-yes" in script
    assert set(init["depends_on"]) == set(nodes)
    feeder = services["feeder-cluster"]
    assert callable(build_parser().parse_args(feeder["command"]).func)
    assert feeder["environment"]["REDIS_URL"] == "redis://redis-node-0:6379/0"
    assert feeder["depends_on"] == {
        "redis-cluster-init": {"condition": "service_completed_successfully"}
    }
    assert feeder["networks"] == ["cluster"] == init["networks"]
    subnet = compose["networks"]["cluster"]["ipam"]["config"][0]["subnet"]
    assert all(a.startswith(subnet.rsplit(".", 1)[0] + ".") for a in addresses)


def test_dockerfile_installs_the_console_script() -> None:
    """The image installs the project and runs `polybus` as its entry point."""
    text = (ROOT / "Dockerfile").read_text()
    assert "pip install" in text
    assert 'ENTRYPOINT ["polybus"]' in text


@pytest.mark.parametrize("bad", [["feed", "--top", "x"], ["nonsense"]])
def test_bad_commands_are_refused(bad: list[str]) -> None:
    """The parser refuses what compose must never contain."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(bad)
