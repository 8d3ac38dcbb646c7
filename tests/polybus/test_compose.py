"""docker-compose.yml: every service's command is a real `polybus` subcommand with real flags."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from polybus.cli import build_parser


ROOT = Path(__file__).resolve().parents[2]


def test_compose_commands_parse_with_the_cli() -> None:
    """Each polybus service's command parses, and the feeder has a healthcheck and restarts."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "feeder", "consumer"}
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
