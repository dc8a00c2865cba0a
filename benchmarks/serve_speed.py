"""Speed of ``capsim serve``: 10,000 ShareGPT-like requests for Mixtral-8x7B on 8x H100 (one TP8 replica).

Prints, per arrival pattern, the wall and CPU time of the simulation (one core: the simulator is single
threaded), the scheduler steps simulated, steps per second, and the ratio of simulated time to wall time.
Target (issue 11): <= 2 s per 10,000 requests. Not a test: run it by hand, on an idle machine.

    python benchmarks/serve_speed.py [--requests 10000]

Lengths: the `sharegpt` profile's means (161 prompt / 338 output tokens, vLLM paper), drawn lognormal with a
standard deviation equal to the mean so the batch churns as in a real trace (the spread is this benchmark's
assumption, not a published statistic).
"""

from __future__ import annotations

import argparse
import time

from capsim.engine.scenario import Scenario
from capsim.serving import SchedulerConfig, build_replica, build_workload, parse_length, serve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    args = parser.parse_args()
    scenario = Scenario(model="mixtral-8x7b", hardware="h100-sxm", gpus=8)
    sched = SchedulerConfig(max_num_seqs=1024, max_batched_tokens=8192)  # vllm-like on H100
    t = time.perf_counter()
    replica = build_replica(scenario, sched)
    print(f"replica build (memory plan + step tables from the engine): {time.perf_counter() - t:.2f} s")
    prompt, output = parse_length("lognormal:161:161", "prompt"), parse_length("lognormal:338:338", "output")
    cases = [
        ("offline (all at t=0)", {"rate": None}),
        ("Poisson 20 req/s", {"rate": 20.0}),
        ("Poisson 60 req/s", {"rate": 60.0}),
        ("closed loop, 256 clients", {"rate": None, "concurrency": 256}),
    ]
    print(
        f"{'arrivals':28} {'wall s':>7} {'cpu s':>7} {'steps':>9} {'steps/s':>10} {'sim s':>9} {'sim/cpu':>9} "
        f"{'mean TPOT ms':>12}"
    )
    for label, kw in cases:
        work = build_workload(num_prompts=args.requests, prompt=prompt, output=output, seed=1, **kw)
        w0, c0 = time.perf_counter(), time.process_time()
        res = serve(scenario, sched, work, replica=replica, timeline=False)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        print(
            f"{label:28} {wall:7.2f} {cpu:7.2f} {res.steps:9,d} {res.steps / cpu:10,.0f} {res.duration_s:9.1f} "
            f"{res.duration_s / cpu:9.0f} {1e3 * res.latency['tpot']['mean']:12.2f}"
        )


if __name__ == "__main__":
    main()
