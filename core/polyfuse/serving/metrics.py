"""The server's counters in Prometheus' text format: requests by status, latency quantiles, batch sizes.

Latencies and batch sizes are kept for the last :data:`WINDOW` requests and forward passes, so the
quantiles follow the current load and memory stays bounded.
"""

from __future__ import annotations

import threading
from collections import Counter, deque

import numpy as np

WINDOW = 10_000
QUANTILES = (0.5, 0.9, 0.99)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServerMetrics:
    """Thread-safe: requests are counted on the event loop, forward passes on the inference thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[int] = Counter()
        self.observations = 0
        self.latencies: deque[float] = deque(maxlen=WINDOW)
        self.batches = 0
        self.batched_observations = 0
        self.batch_sizes: deque[int] = deque(maxlen=WINDOW)
        self.batch_histogram: Counter[int] = Counter()
        self.inference_seconds = 0.0
        self.reloads = 0
        self.refused_reloads = 0

    def request(self, status: int, seconds: float, observations: int = 0) -> None:
        with self._lock:
            self.requests[status] += 1
            self.observations += observations
            if status < 400:
                self.latencies.append(seconds)

    def batch(self, size: int, seconds: float) -> None:
        with self._lock:
            self.batches += 1
            self.batched_observations += size
            self.batch_sizes.append(size)
            self.inference_seconds += seconds
            self.batch_histogram[next((b for b in BATCH_BUCKETS if size <= b), float("inf"))] += 1

    def reloaded(self) -> None:
        with self._lock:
            self.reloads += 1

    def reload_refused(self) -> None:
        with self._lock:
            self.refused_reloads += 1

    def prometheus(self) -> str:
        """The exposition text of every metric (``text/plain; version=0.0.4``)."""
        with self._lock:
            lines = ["# HELP polyfuse_requests_total act requests answered, by HTTP status",
                     "# TYPE polyfuse_requests_total counter"]
            lines += [f'polyfuse_requests_total{{status="{status}"}} {count}'
                      for status, count in sorted(self.requests.items())]
            lines += ["# HELP polyfuse_observations_total observations answered",
                      "# TYPE polyfuse_observations_total counter", f"polyfuse_observations_total {self.observations}"]
            lines += [(f"# HELP polyfuse_request_latency_seconds time from a request's arrival to its answer "
                       f"(successful requests, last {WINDOW})"), "# TYPE polyfuse_request_latency_seconds summary"]
            latencies = np.asarray(self.latencies, dtype=float)
            for q in QUANTILES:
                value = float(np.quantile(latencies, q)) if latencies.size else float("nan")
                lines.append(f'polyfuse_request_latency_seconds{{quantile="{q}"}} {value:.6g}')
            lines += [f"polyfuse_request_latency_seconds_sum {latencies.sum():.6g}",
                      f"polyfuse_request_latency_seconds_count {latencies.size}"]
            lines += ["# HELP polyfuse_batch_size observations per forward pass",
                      "# TYPE polyfuse_batch_size histogram"]
            cumulative = 0
            for bucket in BATCH_BUCKETS:
                cumulative += self.batch_histogram[bucket]
                lines.append(f'polyfuse_batch_size_bucket{{le="{bucket}"}} {cumulative}')
            lines += [f'polyfuse_batch_size_bucket{{le="+Inf"}} {self.batches}',
                      f"polyfuse_batch_size_sum {self.batched_observations}", f"polyfuse_batch_size_count {self.batches}"]
            sizes = np.asarray(self.batch_sizes, dtype=float)
            lines += ["# HELP polyfuse_batch_size_max largest forward pass (last batches)",
                      "# TYPE polyfuse_batch_size_max gauge", f"polyfuse_batch_size_max {int(sizes.max()) if sizes.size else 0}",
                      "# HELP polyfuse_inference_seconds_total time in forward passes",
                      "# TYPE polyfuse_inference_seconds_total counter",
                      f"polyfuse_inference_seconds_total {self.inference_seconds:.6g}",
                      "# HELP polyfuse_reloads_total promoted checkpoints swapped in without downtime",
                      "# TYPE polyfuse_reloads_total counter", f"polyfuse_reloads_total {self.reloads}",
                      "# HELP polyfuse_reloads_refused_total promotions refused (unreadable, not loading, not fitting)",
                      "# TYPE polyfuse_reloads_refused_total counter",
                      f"polyfuse_reloads_refused_total {self.refused_reloads}"]
        return "\n".join(lines) + "\n"
