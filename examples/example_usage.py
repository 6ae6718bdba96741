"""The whole adserving flow, end to end: send, persist with workers, report.

    python examples/example_usage.py        # needs REDIS_URL and DATABASE_URL (scripts/demo sets them)

It sends the docs' sample request (docs/guides/adserving.md) plus a small batch of synthetic
traffic, starts the built-in workers (Ray), waits until every row has landed, prints the system
status and the model's performance stats, and stops.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from typing import Any

from streamtasks.adserving import AsyncProcessingSystem
from streamtasks.adserving.cli import print_stats

MODEL = "fraud_detection"
SYNTHETIC_REQUESTS = 500


async def main() -> int:
    async with AsyncProcessingSystem() as system:
        await system.setup_database()
        before = await count_rows(system)

        mid = await system.send_training_data(
            model_name=MODEL, request_id="req_123",
            input_data={"user_id": 1234, "transaction_amount": 100.50, "features": [0.1, 0.2, 0.3]},
            metadata={"api_version": "v1"}, source_ip="192.168.1.100",
        )  # fmt: skip
        mid2 = await system.send_inference_result(
            model_name=MODEL, request_id="req_123", prediction={"prediction": 0, "probability": 0.85},
            confidence=0.85, anomaly_score=0.15, is_anomaly=False, processing_time_ms=120,
        )  # fmt: skip
        ids = await system.send_api_request_data(
            model_name=MODEL, request_id="req_123", input_data={"user_id": 1234, "amount": 100.50},
            prediction={"prediction": 0, "probability": 0.85}, confidence=0.85, anomaly_score=0.15,
            processing_time_ms=120,
        )  # fmt: skip
        print(f"sent training {mid}, inference {mid2}, api request {ids}")

        rng = random.Random(7)
        await asyncio.gather(*(send_synthetic(system, rng, i) for i in range(SYNTHETIC_REQUESTS)))
        expected = 2 + 2 + 2 * SYNTHETIC_REQUESTS

        started = time.monotonic()
        await system.start_workers()
        while await count_rows(system) - before < expected:
            if time.monotonic() - started > 120:
                print("timed out waiting for rows", file=sys.stderr)
                return 1
            await asyncio.sleep(0.2)
        print(f"{expected} rows landed {time.monotonic() - started:.1f}s after the workers started")

        status = await system.get_system_status()
        print_status(status)
        stats = await system.get_model_performance_stats(MODEL, hours=24)
        print_stats(MODEL, stats, hours=24)
        await system.stop_workers()
    return 0


def print_status(status: dict[str, Any]) -> None:
    print(
        f"redis: {status['producer']['health']}  postgres: {status['database']['health']}  "
        f"ray: {status['ray']['health']}  problems: {status['problems'] or 'none'}"
    )
    for name, s in status["streams"].items():
        print(
            f"  {name}: length {s['length']}, pending {s['pending']}, lag {s['lag']}, "
            f"dead letters {s['dead_letters']}, consumers {len(s['consumers'])}"
        )


async def send_synthetic(system: AsyncProcessingSystem, rng: random.Random, i: int) -> None:
    score = rng.random()
    await system.send_api_request_data(
        model_name=MODEL, request_id=f"req_synth_{i}",
        input_data={"user_id": rng.randint(1, 10_000), "amount": round(rng.uniform(1, 500), 2)},
        prediction={"prediction": int(score > 0.8), "probability": round(1 - score, 3)},
        confidence=round(1 - score / 2, 3), anomaly_score=round(score, 3), is_anomaly=score > 0.9,
        processing_time_ms=round(rng.lognormvariate(3.5, 0.5), 1),
    )  # fmt: skip


async def count_rows(system: AsyncProcessingSystem) -> int:
    pool = await system.database_pool()
    async with pool.acquire() as conn:
        return int(
            await conn.fetchval(
                "SELECT (SELECT count(*) FROM training_data) + (SELECT count(*) FROM inference_results)"
            )
        )


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
