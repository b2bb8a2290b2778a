"""Driving one scenario: a warm-up, then the measured run with the CPU time of the containers on its path."""

from __future__ import annotations

from bench import cpu, scenarios, wrk
from bench.config import BenchConfig, log
from bench.report import Measurement
from bench.scenarios import Scenario
from bench.stack import BenchStack


class Runner:
    def __init__(self, config: BenchConfig, stack: BenchStack, total: int) -> None:
        self.config = config
        self.stack = stack
        self.total = total
        self.measurements: list[Measurement] = []

    def run(self, scenario: Scenario) -> Measurement:
        c = self.config
        connections = scenario.connections or c.connections
        warmup = None
        offset = 0
        if c.warmup:
            warmup = wrk.run(
                scenario.url, seconds=c.warmup, connections=connections, threads=c.threads, options=scenario.options
            )
            # The measured run starts past every line the warm-up may have sent (refresh tokens work
            # once): answered, failed, and in flight when it stopped.
            offset = warmup.requests + warmup.error_count + 2 * connections
        services = {service: self.stack.container_ids((service,)) for service in scenarios.cpu_path(scenario)}
        containers = [cid for ids in services.values() for cid in ids]
        cpu_before = cpu.snapshot(containers)
        result = wrk.run(
            scenario.url,
            seconds=c.duration,
            connections=connections,
            threads=c.threads,
            options={**scenario.options, "start": str(offset)},
        )
        cpu_after = cpu.snapshot(containers)
        cpu_ms = cpu.ms_per_request(cpu_before, cpu_after, result.requests)
        by_service = cpu.by_service(services, cpu_before, cpu_after, result.requests)
        measurement = Measurement.of(scenario, connections, result, warmup, cpu_ms=cpu_ms, cpu_by_service=by_service)
        self.measurements.append(measurement)
        errors = f"{measurement.errors} ERRORS {measurement.error_detail}" if measurement.errors else "0 errors"
        log(
            f"{len(self.measurements):2d}/{self.total} {scenario.label()}: {measurement.rps:,.0f} req/s, "
            f"p50 {measurement.p50_ms} ms, p90 {measurement.p90_ms} ms, p99 {measurement.p99_ms} ms, "
            f"{cpu_ms} ms CPU/request, {errors}"
        )
        return measurement
