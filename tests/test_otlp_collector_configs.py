"""collector/agent.yaml and collector/gateway.yaml: the scale-out reference deployment, checked.

Structural checks until the collector built from Go modules can run ``otelcol
validate`` on them (the real-collector fault tests come with it): components are
defined where they are used and used where they are defined, the 2026 component names
are used, the gateway queues on disk through file_storage (batching there, no batch
processor), retries, and sends to Akto's ``/v1/logs`` with the bearer token from the
environment; compose runs both tiers. Each check is also shown to fail on a config
broken the way it guards against.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from akto_otel.otlp_logs import MAX_EVENT_BYTES, MAX_REQUEST_BYTES, log_batch_size

ROOT = Path(__file__).resolve().parent.parent
AGENT = ROOT / "collector" / "agent.yaml"
GATEWAY = ROOT / "collector" / "gateway.yaml"
COMPOSE = ROOT / "docker-compose.yml"
# Component types renamed in 2026 (the old names only load with a deprecation warning).
_OLD_NAMES = {"otlp": "otlp_grpc", "otlphttp": "otlp_http", "loadbalancing": "load_balancing"}
_ENV = re.compile(r"\$\{env:([A-Z0-9_]+)(:-[^}]*)?\}")


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def _type(component_id: str) -> str:
    return component_id.split("/", 1)[0]


def _default(value: Any) -> str:
    """What a ``${env:NAME:-default}`` setting is when NAME is unset ("" without a default)."""
    text = str(value)
    found = _ENV.fullmatch(text)
    if found is None:
        return text
    return (found.group(2) or ":-")[2:]


def _mib(value: Any) -> int:
    return int(value or 4) * 1024 * 1024  # gRPC's default receive limit is 4 MiB


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _seconds(value: Any) -> float:
    """A collector duration ("90s", "1m30s", "500ms", 0) in seconds."""
    text = str(value).strip()
    if text in ("0", ""):
        return 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    assert "".join(n + u for n, u in parts) == text, f"not a duration: {value!r}"
    return sum(float(n) * _UNITS[u] for n, u in parts)


def wiring_problems(config: dict[str, Any]) -> list[str]:
    """Components used but not defined, defined but not used, old names for exporters."""
    problems: list[str] = []
    service = config.get("service") or {}
    pipelines = service.get("pipelines") or {}
    if not pipelines:
        problems.append("no pipelines")
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for name, pipeline in pipelines.items():
        for kind in used:
            for component in pipeline.get(kind) or []:
                used[kind].add(component)
                if component not in (config.get(kind) or {}):
                    problems.append(f"{name}: {kind} {component} is not defined")
        if not pipeline.get("receivers") or not pipeline.get("exporters"):
            problems.append(f"{name}: needs receivers and exporters")
    for kind, ids in used.items():
        for component in config.get(kind) or {}:
            if component not in ids:
                problems.append(f"{kind} {component} is defined but unused")
    for component in service.get("extensions") or []:
        if component not in (config.get("extensions") or {}):
            problems.append(f"extension {component} is not defined")
    for component in config.get("extensions") or {}:
        if component not in (service.get("extensions") or []):
            problems.append(f"extension {component} is defined but not enabled")
    for component in config.get("exporters") or {}:
        if _type(component) in _OLD_NAMES:
            problems.append(f"exporter {component}: use {_OLD_NAMES[_type(component)]}")
    return problems


def agent_problems(config: dict[str, Any]) -> list[str]:
    problems = wiring_problems(config)
    protocols = ((config.get("receivers") or {}).get("otlp") or {}).get("protocols") or {}
    if not {"grpc", "http"} <= set(protocols):
        problems.append("the otlp receiver needs grpc and http (agents send either)")
    logs = ((config.get("service") or {}).get("pipelines") or {}).get("logs") or {}
    balancers = [e for e in logs.get("exporters") or [] if _type(e) == "load_balancing"]
    if not balancers:
        problems.append("the logs pipeline must export through load_balancing")
    for balancer in balancers:
        spec = config["exporters"][balancer]
        if spec.get("routing_key") not in ("traceID", "service"):
            problems.append(f"{balancer}: route logs by traceID (a session's trace)")
        otlp = (spec.get("protocol") or {}).get("otlp")
        if not isinstance(otlp, dict) or "endpoint" in otlp:
            problems.append(f"{balancer}: protocol.otlp is the per-gateway template, no endpoint")
        # Acknowledged records must be on disk: a crash of this collector loses nothing
        # it accepted (tests/test_stack_real_scaleout.py). The per-gateway exporters
        # keep no in-memory queue of their own behind it.
        queue = spec.get("sending_queue") or {}
        storage = queue.get("storage")
        extensions = config.get("extensions") or {}
        if not queue.get("enabled") or _type(str(storage)) != "file_storage":
            problems.append(f"{balancer}: needs a sending_queue on a file_storage extension")
        elif storage not in extensions:
            problems.append(f"{balancer}: sending_queue.storage {storage} is not defined")
        if not (spec.get("retry_on_failure") or {}).get("enabled"):
            problems.append(f"{balancer}: retry_on_failure must be enabled")
        if isinstance(otlp, dict) and (otlp.get("sending_queue") or {}).get("enabled", True):
            problems.append(f"{balancer}: protocol.otlp.sending_queue must be disabled")
        if isinstance(otlp, dict):
            problems += _split_retry_problems(balancer, spec, otlp)
        resolver = spec.get("resolver") or {}
        hosts = (resolver.get("static") or {}).get("hostnames") or []
        if len(hosts) < 2 and not (resolver.get("dns") or resolver.get("k8s")):
            problems.append(f"{balancer}: needs at least two gateways or a dns/k8s resolver")
    if (logs.get("processors") or [None])[0] != "memory_limiter":
        problems.append("memory_limiter must come first")
    for name, protocol in protocols.items():
        # Agents on the same host only, unless an operator opens it on purpose.
        host = _default((protocol or {}).get("endpoint", "")).rsplit(":", 1)[0]
        if host not in ("127.0.0.1", "localhost", "[::1]"):
            problems.append(f"the otlp {name} receiver must bind loopback by default")
    for balancer in balancers:
        otlp = ((config["exporters"][balancer].get("protocol") or {}).get("otlp")) or {}
        if _default((otlp.get("tls") or {}).get("insecure", "false")) != "false":
            problems.append(f"{balancer}: TLS to the gateways must be on by default")
    limit = agent_receive_limit(config)
    if limit <= MAX_REQUEST_BYTES:
        problems.append(f"the receivers must take the app's largest request ({MAX_REQUEST_BYTES})")
    return problems


def _split_retry_problems(balancer: str, spec: dict[str, Any], otlp: dict[str, Any]) -> list[str]:
    """A request split across gateways is retried per gateway, not as a whole.

    The exporter-wide retry re-sends every gateway's share, the ones the live gateways
    took too (tests/test_stack_real_scaleout.py measured 48 copies in a 30 s outage):
    the per-gateway exporters retry their own share first, within one attempt's
    timeout, and the exporter-wide retry backs off for real.
    """
    problems: list[str] = []
    whole = spec.get("retry_on_failure") or {}
    if float(whole.get("multiplier") or 0) <= 1:
        # load_balancing's default is 0: a retry of the whole request every
        # initial_interval, whatever max_interval says.
        problems.append(f"{balancer}: retry_on_failure.multiplier must be set above 1")
    share = otlp.get("retry_on_failure") or {}
    if not share.get("enabled"):
        problems.append(f"{balancer}: protocol.otlp.retry_on_failure must be enabled")
        return problems
    window = _seconds(share.get("max_elapsed_time", "300s"))
    attempt = _seconds(spec.get("timeout") or "5s")  # the exporter's default: 5 s
    needed = (
        window
        + _seconds(otlp.get("timeout") or "5s")
        + _seconds(share.get("max_interval") or "30s")
    )
    if window <= 0:
        problems.append(f"{balancer}: protocol.otlp.retry_on_failure.max_elapsed_time must be set")
    elif attempt < needed:
        problems.append(
            f"{balancer}: timeout must outlast the per-gateway retries ({needed:.0f} s)"
        )
    return problems


def agent_receive_limit(config: dict[str, Any]) -> int:
    """The largest request the agent collector acknowledges (grpc or http)."""
    protocols = ((config.get("receivers") or {}).get("otlp") or {}).get("protocols") or {}
    grpc = _mib((protocols.get("grpc") or {}).get("max_recv_msg_size_mib"))
    http = int((protocols.get("http") or {}).get("max_request_body_size") or 20 * 1024 * 1024)
    return max(grpc, http)


def gateway_problems(config: dict[str, Any]) -> list[str]:
    problems = wiring_problems(config)
    logs = ((config.get("service") or {}).get("pipelines") or {}).get("logs") or {}
    processors = logs.get("processors") or []
    if "batch" in [_type(p) for p in processors]:
        # It holds records in memory after the receiver acknowledged them: a crash
        # loses them (tests/test_stack_real_scaleout.py). Batch in the disk queue.
        problems.append("no batch processor: batch in the persistent sending_queue")
    if (processors or [None])[0] != "memory_limiter":
        problems.append("memory_limiter must come first")
    senders = [e for e in logs.get("exporters") or [] if _type(e) == "otlp_http"]
    if not senders:
        problems.append("the logs pipeline must export with otlp_http")
    extensions = config.get("extensions") or {}
    for sender in senders:
        spec = config["exporters"][sender]
        if not str(spec.get("logs_endpoint", "")).endswith("/v1/logs"):
            problems.append(f"{sender}: logs_endpoint must be Akto's /v1/logs")
        if (spec.get("headers") or {}).get("Authorization") != "Bearer ${env:AKTO_API_TOKEN}":
            problems.append(f"{sender}: Authorization must be Bearer ${{env:AKTO_API_TOKEN}}")
        if spec.get("compression") != "none":
            problems.append(f"{sender}: Akto's receiver does not decompress: compression none")
        retry = spec.get("retry_on_failure") or {}
        if not retry.get("enabled"):
            problems.append(f"{sender}: retry_on_failure must be enabled")
        elif str(retry.get("max_elapsed_time")) not in ("0", "0s"):
            # Never give up while the disk queue holds the data.
            problems.append(f"{sender}: retry_on_failure.max_elapsed_time must be 0")
        queue = spec.get("sending_queue") or {}
        storage = queue.get("storage")
        if not queue.get("enabled") or not storage:
            problems.append(f"{sender}: needs a persistent sending_queue")
        elif _type(str(storage)) != "file_storage" or storage not in extensions:
            problems.append(f"{sender}: sending_queue.storage must be a file_storage extension")
        batch = queue.get("batch")
        if not isinstance(batch, dict) or batch.get("sizer") != "items":
            problems.append(f"{sender}: the sending_queue must batch by items")
        elif not 0 < int(batch.get("max_size") or 0) <= 6:
            problems.append(f"{sender}: at most 6 events per request (Akto's 4 MiB limit)")
    return problems


def gateway_receive_limit(config: dict[str, Any]) -> int:
    """The largest request a gateway takes from an agent collector (gRPC)."""
    protocols = ((config.get("receivers") or {}).get("otlp") or {}).get("protocols") or {}
    return _mib((protocols.get("grpc") or {}).get("max_recv_msg_size_mib"))


@pytest.fixture(scope="module")
def agent() -> dict[str, Any]:
    return _load(AGENT)


@pytest.fixture(scope="module")
def gateway() -> dict[str, Any]:
    return _load(GATEWAY)


def test_agent_tier_config(agent: dict[str, Any]) -> None:
    assert agent_problems(agent) == []


def test_gateway_tier_config(gateway: dict[str, Any]) -> None:
    assert gateway_problems(gateway) == []


def test_a_gateway_takes_every_request_an_agent_collector_acknowledges(
    agent: dict[str, Any], gateway: dict[str, Any]
) -> None:
    # A request the agent collector acknowledged but a gateway refuses as too big is
    # a permanent error there: dropped. The gateway's limit is above the agent's,
    # which is above the largest request akto_otel's batching makes.
    assert log_batch_size(1 << 20) * MAX_EVENT_BYTES <= MAX_REQUEST_BYTES
    assert MAX_REQUEST_BYTES < agent_receive_limit(agent) < gateway_receive_limit(gateway)


def test_the_agent_collector_is_closed_by_default(agent: dict[str, Any]) -> None:
    for loosened in ("0.0.0.0:4317", "${env:AKTO_AGENT_OTLP_GRPC:-0.0.0.0:4317}"):
        broken = copy.deepcopy(agent)
        broken["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] = loosened
        assert "the otlp grpc receiver must bind loopback by default" in agent_problems(broken)
    broken = copy.deepcopy(agent)
    otlp = broken["exporters"]["load_balancing/akto"]["protocol"]["otlp"]
    otlp["tls"]["insecure"] = "${env:AKTO_GATEWAY_TLS_INSECURE:-true}"
    assert "load_balancing/akto: TLS to the gateways must be on by default" in agent_problems(
        broken
    )
    del otlp["tls"]
    assert not any("TLS" in p for p in agent_problems(broken))  # the collector's default: TLS


def test_the_size_and_retry_checks_catch_broken_configs(
    agent: dict[str, Any], gateway: dict[str, Any]
) -> None:
    broken = copy.deepcopy(gateway)
    broken["exporters"]["otlp_http/akto"]["retry_on_failure"]["max_elapsed_time"] = "300s"
    assert "otlp_http/akto: retry_on_failure.max_elapsed_time must be 0" in gateway_problems(broken)
    broken = copy.deepcopy(gateway)
    del broken["receivers"]["otlp"]["protocols"]["grpc"]["max_recv_msg_size_mib"]
    assert gateway_receive_limit(broken) < agent_receive_limit(agent)
    broken = copy.deepcopy(agent)
    broken["receivers"]["otlp"]["protocols"]["http"]["max_request_body_size"] = 8 << 20
    del broken["receivers"]["otlp"]["protocols"]["grpc"]["max_recv_msg_size_mib"]
    assert any("largest request" in p for p in agent_problems(broken))


def test_no_secret_is_written_into_the_configs() -> None:
    for path in (AGENT, GATEWAY):
        text = path.read_text()
        assert "Bearer ey" not in text
        for name, default in _ENV.findall(text):
            if "TOKEN" in name:
                assert not default, f"{path.name}: {name} must not have a default"


def test_the_checks_catch_broken_configs(agent: dict[str, Any], gateway: dict[str, Any]) -> None:
    broken = copy.deepcopy(gateway)
    del broken["exporters"]["otlp_http/akto"]["sending_queue"]["storage"]
    assert any("persistent sending_queue" in p for p in gateway_problems(broken))

    broken = copy.deepcopy(gateway)
    broken["processors"]["batch"] = {"timeout": "1s"}
    broken["service"]["pipelines"]["logs"]["processors"] = ["memory_limiter", "batch"]
    assert any("no batch processor" in p for p in gateway_problems(broken))

    broken = copy.deepcopy(gateway)
    del broken["exporters"]["otlp_http/akto"]["sending_queue"]["batch"]
    assert any("must batch by items" in p for p in gateway_problems(broken))

    broken = copy.deepcopy(gateway)
    broken["exporters"]["otlp_http/akto"]["sending_queue"]["batch"]["max_size"] = 100
    assert any("at most 6 events" in p for p in gateway_problems(broken))

    broken = copy.deepcopy(gateway)
    broken["exporters"]["otlp_http/akto"]["headers"]["Authorization"] = "Bearer abc"
    assert any("Authorization" in p for p in gateway_problems(broken))

    broken = copy.deepcopy(gateway)
    broken["exporters"]["otlphttp/akto"] = broken["exporters"].pop("otlp_http/akto")
    broken["service"]["pipelines"]["logs"]["exporters"] = ["otlphttp/akto"]
    assert any("use otlp_http" in p for p in gateway_problems(broken))

    broken = copy.deepcopy(gateway)
    broken["service"]["extensions"] = ["health_check"]
    assert any("not enabled" in p for p in gateway_problems(broken))

    broken = copy.deepcopy(agent)
    broken["exporters"]["load_balancing/akto"]["resolver"]["static"]["hostnames"] = ["a:4317"]
    assert any("two gateways" in p for p in agent_problems(broken))

    broken = copy.deepcopy(agent)
    broken["exporters"]["load_balancing/akto"]["protocol"]["otlp"]["endpoint"] = "x:4317"
    assert any("no endpoint" in p for p in agent_problems(broken))

    broken = copy.deepcopy(agent)
    del broken["exporters"]["load_balancing/akto"]["sending_queue"]["storage"]
    assert any("file_storage" in p for p in agent_problems(broken))

    broken = copy.deepcopy(agent)
    broken["exporters"]["load_balancing/akto"]["protocol"]["otlp"]["sending_queue"] = {
        "enabled": True
    }
    assert any("must be disabled" in p for p in agent_problems(broken))


def test_the_retry_checks_catch_whole_request_retries(agent: dict[str, Any]) -> None:
    # Each is a way back to re-sending the live gateways' shares with every retry.
    def broken_with(change: Any) -> list[str]:
        broken = copy.deepcopy(agent)
        change(broken["exporters"]["load_balancing/akto"])
        return agent_problems(broken)

    assert "load_balancing/akto: retry_on_failure.multiplier must be set above 1" in broken_with(
        lambda lb: lb["retry_on_failure"].pop("multiplier")
    )
    assert "load_balancing/akto: protocol.otlp.retry_on_failure must be enabled" in broken_with(
        lambda lb: lb["protocol"]["otlp"]["retry_on_failure"].update(enabled=False)
    )
    assert any("timeout must outlast" in p for p in broken_with(lambda lb: lb.pop("timeout")))
    assert any(
        "timeout must outlast" in p
        for p in broken_with(
            lambda lb: lb["protocol"]["otlp"]["retry_on_failure"].update(max_elapsed_time="120s")
        )
    )
    assert any(
        "max_elapsed_time must be set" in p
        for p in broken_with(
            lambda lb: lb["protocol"]["otlp"]["retry_on_failure"].update(max_elapsed_time=0)
        )
    )
    assert _seconds("1m30s") == 90 and _seconds("500ms") == 0.5 and _seconds(0) == 0


def test_compose_runs_both_tiers_against_the_emulator() -> None:
    compose = _load(COMPOSE)
    services = compose["services"]
    agent = services["akto-agent-collector"]
    assert "./collector/agent.yaml:/etc/otelcol-contrib/config.yaml:ro" in agent["volumes"]
    gateways = [n for n, s in services.items() if n.startswith("akto-gateway-")]
    assert len(gateways) == 2
    targets = {agent["environment"]["AKTO_GATEWAY_1"], agent["environment"]["AKTO_GATEWAY_2"]}
    assert targets == {f"{n}:4317" for n in gateways}
    queues = set()
    for name in gateways:
        service = services[name]
        assert service["profiles"] == ["scale-out"]
        assert "./collector/gateway.yaml:/etc/otelcol-contrib/config.yaml:ro" in service["volumes"]
        env = service["environment"]
        assert env["AKTO_OTLP_URL"] == "http://akto-emulator:9090"
        assert env["AKTO_API_TOKEN"]
        queue_dir = env["AKTO_GATEWAY_QUEUE_DIR"]
        (volume,) = [v for v in service["volumes"] if v.endswith(":" + queue_dir)]
        queues.add(volume.split(":", 1)[0])
        assert volume.split(":", 1)[0] in compose["volumes"]
    assert len(queues) == 2, "each gateway needs its own persistent queue"
    # Every variable without a default is set by compose.
    for path, service in ((AGENT, agent), (GATEWAY, services[gateways[0]])):
        for name, default in _ENV.findall(path.read_text()):
            if not default:
                assert name in service["environment"], f"{path.name} needs {name}"
