"""Denormal floats on the CPU: one quick sweep trial's epochs with and without flush-to-zero.

Late in training some activations and gradients of the small MLP nets fall below 1.2e-38
(denormals), where x86 CPUs compute far slower; training then slows down epoch after epoch.
``trainables.driver.flush_denormals`` sets the flush-to-zero flags on the thread that trains.
This times the quick ``simvae_J`` sweep's J=2 trial (digits and shapes, seed 0, in lockstep,
one thread, as in a sweep) twice in one process: flags off, then on (each in its own thread:
the flags are per thread). Measured on 2 quiet cores, 12 epochs: with flushing 7.4-8.8 s an
epoch throughout; without, 7.6-8.6 s for the first 6 epochs, then 11, 17, 15, 15, 18, 20 s
(1.94x over the second half; a whole 20-epoch trial in a sweep: 26 s an epoch at the end).

    python benchmarks/denormals.py [--epochs 12] [--J 2]

Prints one line per epoch and mode, then as its last line one JSON object of the figures.
"""
from __future__ import annotations

import argparse
import json
import threading
import time


def timed_epochs(flush: bool, epochs: int, J: int) -> list[float]:
    import torch

    from sweeps.spaces import expand, run_configs
    from trainables import driver as T

    configs = [{**c, "epochs": epochs} for c in run_configs(expand("simvae_J", "quick"), {"J": J})]
    times: list[float] = []

    class Clock(T.Hooks):
        def started(self, group):
            self.last, self.group = time.perf_counter(), group

        def epoch(self, run, row):
            if run is self.group.runs[-1]:  # the group's epoch is done
                now = time.perf_counter()
                times.append(now - self.last)
                self.last = now
                print(f"  flush {'on ' if flush else 'off'}  epoch {len(times):2d}  {times[-1]:5.1f} s", flush=True)

    def work():
        torch.set_num_threads(1)
        torch.set_flush_denormal(flush)
        if not flush:
            T.flush_denormals = lambda: None  # what training did before
        try:
            T.train(configs, Clock())
        finally:
            T.flush_denormals = original

    original = T.flush_denormals
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--J", type=int, default=2)
    args = p.parse_args()
    off = timed_epochs(False, args.epochs, args.J)
    on = timed_epochs(True, args.epochs, args.J)
    half = args.epochs // 2
    late_off, late_on = sum(off[half:]) / len(off[half:]), sum(on[half:]) / len(on[half:])
    print(f"mean epoch, second half: {late_off:.1f} s without flushing, {late_on:.1f} s with "
          f"({late_off / late_on:.2f}x); whole run {sum(off):.0f} s vs {sum(on):.0f} s")
    print(json.dumps({"epochs": args.epochs, "J": args.J, "epoch_s_off": [round(t, 2) for t in off],
                      "epoch_s_on": [round(t, 2) for t in on], "late_ratio": round(late_off / late_on, 2),
                      "total_off_s": round(sum(off), 1), "total_on_s": round(sum(on), 1)}))


if __name__ == "__main__":
    main()
