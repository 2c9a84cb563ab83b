"""AKTO_DELIVERY=otlp through the real collector fleet of docs/scale-out.md.

What runs (127.0.0.1, free ports, all stopped after): guarded sessions through the
real bundled CLI and the fake model, verdicts from one emulator (direct, as in
production); their records as OTLP log events from the SDK's batch processor and
OTLP/HTTP exporter to the real agent collector (collector/agent.yaml), which
load-balances by trace id to two real gateways (collector/gateway.yaml, a disk
queue each in tmp_path), which post with the token to a second emulator standing
in for Akto's OTLP ingestion (``POST /v1/logs``). An in-memory exporter on the same
LoggerProvider is the ground truth of what the agent emitted.

Akto's mapping keeps no ``akto.record.id``, so the Akto stand-in also decodes each
accepted request to count records by it (tests/scaleout_stack.py).

1. Happy path: every emitted record arrives, mapped as Akto maps it.
2. Faults: a gateway crashes (SIGKILL) mid-run and restarts; then Akto is down for
   15 s (the emulator stopped, its port left free, started again on it; 15 s rather
   than a minute keeps CI time down, and already spans several gateway retries):
   every record arrives at least once; what the gateways queued on disk is delivered
   after.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from claude_agent_sdk import ClaudeAgentOptions
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    InMemoryLogRecordExporter,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

from akto_otel import AktoGuardrails
from akto_otel.config import Settings
from akto_otel.contract import PAYLOAD_LIMIT, WireContext, tool_result_record
from akto_otel.emulator import EmulatorServer
from akto_otel.otlp_logs import log_batch_size
from akto_otel.processor import AktoSpanProcessor
from akto_otel.testing import FakeAnthropic, Scenario, Text, ToolUse, offline_agent_env, run_agent
from benchmarks.servers import free_port
from tests.scaleout_stack import (
    Stack,
    TappedAkto,
    post_prompt_event,
    post_prompt_events,
    scaleout_stack,
    wait_for,
)

pytestmark = pytest.mark.timeout(240)
TOKEN = "scaleout-t0ken"
ARRIVAL_S = 60.0
OUTAGE_S = 15.0


class _OneTrace(RandomIdGenerator):
    """Every session in one trace: the load balancer routes all of it to one gateway."""

    def __init__(self, trace_id: int) -> None:
        self.trace_id = trace_id

    def generate_trace_id(self) -> int:
        return self.trace_id


class Agent:
    """Guarded sessions whose records leave as OTLP logs to the agent collector."""

    def __init__(
        self,
        verdicts: EmulatorServer,
        stack: Stack,
        home: Path,
        workdir: Path,
        trace_id: int | None = None,
        export_timeout: float = 30,
    ) -> None:
        self.truth = InMemoryLogRecordExporter()
        self.logs = LoggerProvider(shutdown_on_exit=False)
        self.logs.add_log_record_processor(SimpleLogRecordProcessor(self.truth))
        (ep,) = entry_points(group="opentelemetry_logs_exporter", name="otlp_proto_http")
        exporter = ep.load()(endpoint=f"{stack.agent.otlp}/v1/logs", timeout=export_timeout)
        self.logs.add_log_record_processor(
            BatchLogRecordProcessor(exporter, schedule_delay_millis=200)
        )
        settings = Settings.from_env({}, ingestion_url=verdicts.url, timeout=5.0, delivery="otlp")
        self.guard = AktoGuardrails(
            settings,
            tracer_provider=TracerProvider(
                id_generator=_OneTrace(trace_id) if trace_id else RandomIdGenerator()
            ),
            meter_provider=MeterProvider(),
            processor=AktoSpanProcessor(settings, logger_provider=self.logs),
        )
        self.home, self.workdir = home, workdir
        self.sessions = 0

    async def session(self, flush: bool = True) -> None:
        n = self.sessions = self.sessions + 1
        scenario = Scenario(
            None,
            [ToolUse("Bash", {"command": f"echo {n} > s{n}.txt"}), Text(f"Wrote file {n}.")],
        )
        with FakeAnthropic(scenario) as fake:
            options = ClaudeAgentOptions(
                env=offline_agent_env(fake, self.home),
                cwd=str(self.workdir),
                allowed_tools=["Bash"],
            )
            async with self.guard.session(options) as guarded:
                await run_agent(f"write file number {n}", guarded)
        assert (self.workdir / f"s{n}.txt").read_text().strip() == str(n)
        if flush:
            assert self.guard.force_flush()
            assert self.logs.force_flush(30_000)

    def emitted_ids(self) -> list[str]:
        return [
            str((item.log_record.attributes or {})["akto.record.id"])
            for item in self.truth.get_finished_logs()
        ]

    def close(self) -> None:
        self.guard.shutdown()
        self.logs.shutdown()


@pytest.fixture
def akto() -> Iterator[TappedAkto]:
    server = TappedAkto(token=TOKEN)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _arrived(*servers: TappedAkto) -> Counter[str]:
    return Counter(i for s in servers for i in s.accepted_ids)


def _mapped(*servers: TappedAkto) -> list[dict[str, Any]]:
    return [r.record for s in servers for r in s.records if r.endpoint == "otlp-logs"]


async def test_every_record_crosses_the_collector_fleet_to_akto(
    emulator: EmulatorServer, akto: TappedAkto, tmp_path: Path, home: Path, workdir: Path
) -> None:
    with scaleout_stack(tmp_path, akto.url, TOKEN) as stack:
        agent = Agent(emulator, stack, home, workdir)
        try:
            for _ in range(4):
                await agent.session()
        finally:
            agent.close()
        emitted = agent.emitted_ids()
        assert len(emitted) == len(set(emitted)) == 4 * 3  # prompt, tool result, answer
        wait_for(
            lambda: set(_arrived(akto)) >= set(emitted),
            "records missing at Akto",
            ARRIVAL_S,
        )
        gateway_accepted = [
            g.metric("otelcol_receiver_accepted_log_records") for g in stack.gateways
        ]
    arrived = _arrived(akto)
    assert set(arrived) == set(emitted)  # nothing else arrived
    duplicates = sum(arrived.values()) - len(arrived)
    assert duplicates == 0, arrived  # no fault, no retry: each once
    assert sum(gateway_accepted) == len(emitted), gateway_accepted
    # The gateways batch for Akto's 4 MiB request limit: at most 6 events a request.
    assert akto.request_sizes
    assert max(akto.request_sizes) <= 6, akto.request_sizes

    # Akto's mapping: every session's tool row and its merged (or split) turn rows;
    # the records are judged again by Akto, and they came with the token.
    mapped = _mapped(akto)
    assert mapped
    tool_rows = [r for r in mapped if r["path"] == "/tool/bash"]
    commands = sorted(json.loads(r["requestPayload"])["body"]["command"] for r in tool_rows)
    assert commands == [f"echo {n} > s{n}.txt" for n in range(1, 5)]
    turns = [r for r in mapped if r["path"] == "/v1/messages"]
    for n in range(1, 5):
        assert any(f"write file number {n}" in r["requestPayload"] for r in turns), n
        assert any(f"Wrote file {n}." in r["responsePayload"] for r in turns), n
    for record in mapped:
        assert record["publishToGuardrails"] is True
    assert not [r for r in emulator.records if r.endpoint in ("ingestData", "otlp-logs")]


async def test_a_gateway_crash_and_an_akto_outage_lose_nothing(
    emulator: EmulatorServer, tmp_path: Path, home: Path, workdir: Path
) -> None:
    port = free_port()
    first = TappedAkto(token=TOKEN, port=port)
    second = TappedAkto(token=TOKEN, port=port)
    first.start()
    try:
        with scaleout_stack(tmp_path, first.url, TOKEN) as stack:
            # One trace id for every session, so the test knows which gateway they
            # reach (the one whose receiver counted the first session's records).
            agent = Agent(emulator, stack, home, workdir, trace_id=0x5CA1E0 << 64 | 1)
            try:
                for _ in range(2):
                    await agent.session()
                wait_for(
                    lambda: set(_arrived(first)) >= set(agent.emitted_ids()),
                    "records missing before the crash",
                    ARRIVAL_S,
                )
                (crashed,) = [
                    g
                    for g in stack.gateways
                    if g.metric("otelcol_receiver_accepted_log_records") == 2 * 3
                ]

                # That gateway crashes; sessions go on, routed to it; it comes back on
                # the same ports and queue directory. Meanwhile their records wait in
                # the agent collector's retrying sending queue.
                crashed.kill()
                for _ in range(3):
                    await agent.session()
                assert not set(_arrived(first)) >= set(agent.emitted_ids())
                crashed.program.start()
                wait_for(
                    lambda: set(_arrived(first)) >= set(agent.emitted_ids()),
                    "records missing after the gateway restart",
                    ARRIVAL_S,
                )
                # The restarted process (its counters start at zero) took them.
                assert crashed.metric("otelcol_receiver_accepted_log_records") == 3 * 3

                # Akto goes down (its port stays free); sessions go on; the gateways
                # queue on disk and retry.
                first.stop()
                down_at = time.monotonic()
                for _ in range(3):
                    await agent.session()
                wait_for(
                    lambda: (
                        sum(g.metric("otelcol_exporter_queue_size") for g in stack.gateways) > 0
                    ),
                    "nothing queued at the gateways while Akto is down",
                    ARRIVAL_S,
                )
                queued = [g for g in stack.gateways if g.metric("otelcol_exporter_queue_size")]
                assert queued
                # The disk queue, not memory: a gateway holding queued records crashes
                # and restarts during the outage; its queue must survive it.
                time.sleep(1.5)  # past the gateway's 1 s batch timeout: all in the queue
                queued[0].kill()
                queued[0].program.start()
                assert queued[0].metric("otelcol_exporter_queue_size") > 0
                left = OUTAGE_S - (time.monotonic() - down_at)
                if left > 0:
                    time.sleep(left)
                assert not _arrived(first).keys() >= set(agent.emitted_ids())
                second.start()
                wait_for(
                    lambda: set(_arrived(first, second)) >= set(agent.emitted_ids()),
                    "records missing after Akto came back",
                    ARRIVAL_S,
                )
                emitted = agent.emitted_ids()
            finally:
                agent.close()
    finally:
        first.stop()
        second.stop()
    arrived = _arrived(first, second)
    assert len(emitted) == len(set(emitted)) == 8 * 3
    assert set(arrived) == set(emitted)
    assert _arrived(second), "nothing was delivered after the outage"
    duplicates = sum(arrived.values()) - len(arrived)
    # At least once: a retry after a crash may resend; count, do not forbid.
    print(f"records {len(emitted)}, deliveries {sum(arrived.values())}, duplicates {duplicates}")


async def test_a_gateway_crash_right_after_accepting_loses_nothing(
    emulator: EmulatorServer, tmp_path: Path, home: Path, workdir: Path
) -> None:
    # The attack on at-least-once: the gateway answers the agent collector "accepted"
    # and crashes before its records reach the disk queue (a batch processor holds
    # them in memory for up to its timeout). The agent collector will not resend.
    akto = TappedAkto(token=TOKEN)
    akto.start()
    try:
        with scaleout_stack(tmp_path, akto.url, TOKEN) as stack:
            agent = Agent(emulator, stack, home, workdir, trace_id=0x5CA1E0 << 64 | 2)
            try:
                await agent.session()
                emitted = agent.emitted_ids()
                wait_for(
                    lambda: (
                        sum(
                            g.metric("otelcol_receiver_accepted_log_records")
                            for g in stack.gateways
                        )
                        == len(emitted)
                    ),
                    "the gateways never accepted the records",
                    ARRIVAL_S,
                )
                (crashed,) = [
                    g for g in stack.gateways if g.metric("otelcol_receiver_accepted_log_records")
                ]
                crashed.kill()
                crashed.program.start()
                wait_for(
                    lambda: set(_arrived(akto)) >= set(emitted),
                    "records accepted by the crashed gateway never reached Akto",
                    20.0,
                )
            finally:
                agent.close()
    finally:
        akto.stop()
    assert set(_arrived(akto)) == set(emitted)


async def test_an_agent_collector_crash_loses_nothing_it_acknowledged(
    emulator: EmulatorServer, tmp_path: Path, home: Path, workdir: Path
) -> None:
    # The attack on at-least-once one tier up: the agent collector answers the app's
    # exporter "accepted", holds the records while no gateway takes them, and crashes
    # (SIGKILL). The app will not resend what was acknowledged.
    akto = TappedAkto(token=TOKEN)
    akto.start()
    try:
        with scaleout_stack(tmp_path, akto.url, TOKEN) as stack:
            agent = Agent(emulator, stack, home, workdir)
            try:
                for gateway in stack.gateways:
                    gateway.program.stop()
                await agent.session()  # flushed: the app's exporter got "accepted"
                acked = agent.emitted_ids()
                assert len(acked) == 3
                accepted = stack.agent.metric("otelcol_receiver_accepted_log_records")
                assert accepted == len(acked)
                stack.agent.kill()
                for gateway in stack.gateways:
                    gateway.program.start()
                stack.agent.program.start()  # same ports, same queue directory
                wait_for(
                    lambda: set(_arrived(akto)) >= set(acked),
                    "records the agent collector acknowledged were lost in its crash",
                    ARRIVAL_S,
                )
            finally:
                agent.close()
    finally:
        akto.stop()
    assert set(_arrived(akto)) == set(acked)


async def test_what_the_app_sends_while_the_agent_collector_is_down(
    emulator: EmulatorServer, tmp_path: Path, home: Path, workdir: Path
) -> None:
    # Measured, not wished: the app's OTLP log exporter (SDK, http/protobuf) retries a
    # refused batch with backoff (about 1, 2, 4 s ...) only until its timeout
    # (OTEL_EXPORTER_OTLP_LOGS_TIMEOUT; 10 s by default, which gave up after about 6 s
    # here). A collector back within that window loses nothing; a batch whose retries
    # end first is dropped by the SDK. Two apps show both: one with a 20 s timeout, one
    # with 2 s (so the test need not wait out the default).
    (workdir / "patient").mkdir()
    (workdir / "hasty").mkdir()
    akto = TappedAkto(token=TOKEN)
    akto.start()
    try:
        with scaleout_stack(tmp_path, akto.url, TOKEN) as stack:
            patient = Agent(emulator, stack, home, workdir / "patient", export_timeout=20)
            hasty = Agent(emulator, stack, home, workdir / "hasty", export_timeout=2)
            try:
                # 1. Down briefly: records emitted, their export refused, the collector
                #    restarted within the exporter's retries, which deliver them.
                stack.agent.kill()
                await patient.session(flush=False)
                wait_for(lambda: len(patient.emitted_ids()) == 3, "records not emitted", 30)
                short = patient.emitted_ids()
                time.sleep(1.0)  # past the batch processor's 200 ms: the export was refused
                stack.agent.program.start()
                assert patient.guard.force_flush() and patient.logs.force_flush(30_000)
                wait_for(
                    lambda: set(_arrived(akto)) >= set(short),
                    "records sent during a short agent collector outage were lost",
                    ARRIVAL_S,
                )

                # 2. Down for longer than the exporter retries: its batch is dropped.
                stack.agent.kill()
                await hasty.session(flush=False)
                hasty.guard.force_flush()
                hasty.logs.force_flush(30_000)  # returns once the exporter gave up
                lost = hasty.emitted_ids()
                assert len(lost) == 3
                stack.agent.program.start()
                await patient.session()
                after = sorted(set(patient.emitted_ids()) - set(short))
                assert len(after) == 3
                wait_for(
                    lambda: set(_arrived(akto)) >= set(after),
                    "records sent after the agent collector came back are missing",
                    ARRIVAL_S,
                )
                # The restarted collector never received the dropped batch.
                received = stack.agent.metric("otelcol_receiver_accepted_log_records")
            finally:
                patient.close()
                hasty.close()
    finally:
        akto.stop()
    arrived = set(_arrived(akto))
    assert arrived == set(short) | set(after)
    assert not arrived & set(lost)
    assert received == len(after)


def test_one_gateway_down_holds_back_the_agent_tier_until_it_returns(tmp_path: Path) -> None:
    # The measured price of the agent collector's disk queue (collector/agent.yaml):
    # the per-gateway exporters cannot have a persistent queue of their own, so the
    # load_balancing exporter's 4 consumers retry a batch for a dead gateway in place.
    # With the static resolver (the dead gateway stays in the ring), once 4 batches
    # wait for it, the live gateway's batches wait behind them; nothing is lost if it
    # returns within retry_on_failure.max_elapsed_time. The events are posted straight
    # to the agent collector, as the app's exporter posts them: 40 one-event requests
    # of 40 traces need no 40 CLI sessions.
    akto = TappedAkto(token=TOKEN)
    akto.start()
    try:
        with scaleout_stack(tmp_path, akto.url, TOKEN) as stack:
            live, dead = stack.gateways
            dead.program.stop()
            sent = [post_prompt_event(stack.agent.otlp, trace) for trace in range(1, 41)]
            time.sleep(3.0)  # the old, per-gateway in-memory queues delivered all in 2 s
            early = live.metric("otelcol_receiver_accepted_log_records")
            dead.program.start()
            wait_for(
                lambda: set(_arrived(akto)) >= set(sent),
                "records routed to the returning gateway were lost",
                ARRIVAL_S,
            )
            live_share = live.metric("otelcol_receiver_accepted_log_records")
            dead_share = dead.metric("otelcol_receiver_accepted_log_records")
    finally:
        akto.stop()
    assert set(_arrived(akto)) == set(sent)
    assert live_share + dead_share == len(sent)  # one-event requests: no duplicates
    assert dead_share >= 4
    print(f"live gateway: {early:.0f} of its {live_share:.0f} delivered while the other was down")
    assert early < live_share


def test_sixty_tool_outputs_at_the_cap_all_cross_the_fleet(
    akto: TappedAkto, tmp_path: Path
) -> None:
    # The attack on "acknowledged means delivered": requests the agent collector takes
    # but a gateway refuses as too big (gRPC's default 4 MiB) are a permanent error
    # there, dropped after the app heard "accepted". Incompressible tool outputs at the
    # contract's cap, all in one trace so they go to one gateway, batched the way
    # configure() batches (log_batch_size): every one must arrive.
    wire = WireContext().with_session("big-session", "big-prompt")
    with scaleout_stack(tmp_path, akto.url, TOKEN) as stack:
        logs = LoggerProvider(shutdown_on_exit=False)
        (ep,) = entry_points(group="opentelemetry_logs_exporter", name="otlp_proto_http")
        exporter = ep.load()(endpoint=f"{stack.agent.otlp}/v1/logs", timeout=60)
        logs.add_log_record_processor(
            BatchLogRecordProcessor(
                exporter,
                schedule_delay_millis=200,
                max_export_batch_size=log_batch_size(4096),
            )
        )
        settings = Settings.from_env({}, delivery="otlp")
        processor = AktoSpanProcessor(settings, logger_provider=logs)
        provider = TracerProvider(id_generator=_OneTrace(0xB16))
        provider.add_span_processor(processor)
        for n in range(60):
            span = provider.get_tracer("t").start_span("execute_tool Bash")
            output = secrets.token_hex(PAYLOAD_LIMIT // 2 - 1024)  # incompressible
            record = tool_result_record(wire, "Bash", {"command": f"cat big{n}"}, output)
            processor.attach(span, record, kind="tool.result")
            span.end()
        assert processor.force_flush(60_000)
        assert logs.force_flush(120_000)
        wait_for(lambda: len(set(_arrived(akto))) >= 60, "tool outputs lost", ARRIVAL_S)
        refused = stack.agent.metric("otelcol_exporter_send_failed_log_records")
        processor.shutdown()
        logs.shutdown()
    arrived = _arrived(akto)
    assert len(arrived) == 60 and refused == 0
    print(f"60 of 60 at {PAYLOAD_LIMIT // 1024} KiB; {sum(arrived.values()) - 60} duplicates")
    assert sum(arrived.values()) == 60  # no fault, no retry: each once


def copy_bound(outage_s: float) -> int:
    """The most copies of an event a gateway outage of ``outage_s`` seconds may deliver.

    collector/agent.yaml retries a failed gateway's share alone for 60 s
    (protocol.otlp.retry_on_failure) inside one attempt of the whole request; only when
    that gives up does the exporter-wide retry send the whole request again, the live
    gateway's share included. An attempt with a gateway down lasts at least 52.5 s (the
    per-gateway retry stops when the next wait, at most 7.5 s with jitter, would pass
    60 s) and the exporter-wide wait at least 2.5 s: one more copy per 55 s of outage.
    The margin of one is for a send that timed out after the gateway took it.
    """
    return 2 + int(outage_s // 55)


# AKTO_SCALEOUT_OUTAGE_S=90 measures a longer outage, past the per-gateway retry window.
@pytest.mark.timeout(120 + 2 * float(os.environ.get("AKTO_SCALEOUT_OUTAGE_S", "30")))
def test_a_gateway_down_30_s_bounds_the_copies_of_a_split_request(tmp_path: Path) -> None:
    # One request of 16 traces is split across the two gateways while one is down. The
    # attack: an exporter-wide retry re-sends the whole request, so every retry of the
    # dead gateway's share re-sends the share the live gateway already took (the
    # previous agent config retried with the exporter's default multiplier 0, every
    # second: the live share arrived 45 times each). collector/agent.yaml retries per gateway
    # first (copy_bound), so in a 30 s outage the live share is sent once.
    outage_s = float(os.environ.get("AKTO_SCALEOUT_OUTAGE_S", "30"))
    akto = TappedAkto(token=TOKEN)
    akto.start()
    try:
        with scaleout_stack(tmp_path, akto.url, TOKEN) as stack:
            dead = stack.gateways[1]
            dead.program.stop()
            sent = post_prompt_events(stack.agent.otlp, range(1, 17))  # 16 traces, one request
            time.sleep(outage_s)
            dead.program.start()
            wait_for(lambda: set(_arrived(akto)) >= set(sent), "records lost", ARRIVAL_S)
            # Until the request left the agent's queue, a retry could still re-send it.
            wait_for(
                lambda: stack.agent.metric("otelcol_exporter_queue_size") == 0,
                "the request stayed in the agent collector's queue",
                ARRIVAL_S,
            )
            time.sleep(1.0)
            shares = [g.metric("otelcol_receiver_accepted_log_records") for g in stack.gateways]
    finally:
        akto.stop()
    arrived = _arrived(akto)
    assert set(arrived) == set(sent)
    print(
        f"copies per event after a {outage_s:.0f} s gateway outage: "
        f"{sorted(arrived.values())}; gateways accepted {shares} of {len(sent)}"
    )
    assert 0 < shares[1] < len(sent)  # the request was split: both gateways had a share
    assert max(arrived.values()) <= copy_bound(outage_s), arrived  # docs/scale-out.md


def test_the_agent_collector_speaks_tls_to_the_gateways_by_default(tmp_path: Path) -> None:
    # Records carry prompts and tool output in full: with the config's defaults the
    # agent collector must refuse to send them to a gateway in plain text.
    akto = TappedAkto(token=TOKEN)
    akto.start()
    try:
        with scaleout_stack(tmp_path, akto.url, TOKEN, plain_text=False) as stack:
            post_prompt_events(stack.agent.otlp, range(1, 5))
            time.sleep(10.0)  # in plain text the gateways take them within a second
            accepted = [g.metric("otelcol_receiver_accepted_log_records") for g in stack.gateways]
            waiting = stack.agent.metric("otelcol_exporter_queue_size")
    finally:
        akto.stop()
    assert accepted == [0, 0]
    assert waiting > 0  # kept (on disk) and retried, not sent
    assert not akto.accepted_ids
