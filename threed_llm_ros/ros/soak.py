"""``threed-llm bench --soak MINUTES``: run threed_llm_node for minutes under a camera's load.

The node runs in its own process (as under ``ros2 launch``) in a private namespace; this
process plays a 30 Hz point-cloud camera (simulated rooms, best-effort sensor QoS) and a
user who asks a prompt every few seconds (the next one once the last is answered). It
samples the node's RSS, times every reply and reads the node's /diagnostics, then writes
a JSON report (:func:`threed_llm_ros.runtime.soak_report.soak_report`): RSS over time and
its growth after warm-up, frames sent / received / dropped as stale, reply latency
p50/p95/p99, and errors (failed, busy, missing or frameless replies, bad inputs, a node exit).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import String

from threed_llm_ros.processes import NodeProcess, NodeProcessSpec
from threed_llm_ros.resources import config_path
from threed_llm_ros.ros.conversions import arrays_to_pointcloud2, tuple_to_stamp
from threed_llm_ros.ros.qos import sensor_qos, use_large_message_transport
from threed_llm_ros.runtime.soak_report import MIB, soak_report
from threed_llm_ros.data.sim.frames import simulate

NAMESPACE = "/threed_llm_soak"
FRAME_ID = "soak_camera_optical_frame"
PROMPTS = ("Where is the chair?", "Is there a red cup?", "How many chairs are there?", "Describe the scene.",
           "Bring the cup to the table.", "What colour is the sofa?")
STARTUP_S = 300.0


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _clouds(points: int, count: int = 4) -> list[PointCloud2]:
    messages = []
    for seed in range(3, 3 + count):
        frame = simulate(seed)
        keep = np.random.default_rng(seed).choice(len(frame.points), min(points, len(frame.points)), replace=False)
        messages.append(arrays_to_pointcloud2(frame.points[keep], frame.colors[keep], frame_id=FRAME_ID))
    return messages


class _Client:
    """The camera and the user: this process's own ROS node, spun in a background thread."""

    def __init__(self) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("threed_llm_soak_client", namespace=NAMESPACE, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.answers: list[tuple[float, str]] = []
        self.diagnostics: dict[str, str] = {}
        self._lock = threading.Lock()
        reliable = QoSProfile(depth=256, reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(String, "answer", self._on_answer, reliable)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.clouds = self.node.create_publisher(PointCloud2, "points", sensor_qos())
        self.prompts = self.node.create_publisher(String, "prompt", reliable)
        self._running = True
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self._running:
            self.executor.spin_once(timeout_sec=0.05)

    def _on_answer(self, message: String) -> None:
        with self._lock:
            self.answers.append((time.monotonic(), message.data))

    def _on_diagnostics(self, message: DiagnosticArray) -> None:
        for status in message.status:
            if status.name.startswith("threed_llm_node"):
                with self._lock:
                    self.diagnostics = {value.key: value.value for value in status.values}

    def answer_count(self) -> int:
        with self._lock:
            return len(self.answers)

    def answer(self, index: int) -> tuple[float, str]:
        with self._lock:
            return self.answers[index]

    def latest_diagnostics(self) -> dict[str, str]:
        with self._lock:
            return dict(self.diagnostics)

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


class _Camera:
    """Publishes the clouds in turn at ``rate_hz`` (fresh stamps) from a background thread."""

    def __init__(self, client: _Client, clouds: list[PointCloud2], rate_hz: float) -> None:
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(client, clouds, 1.0 / rate_hz), daemon=True)
        self.started = time.monotonic()
        self._thread.start()

    def _run(self, client: _Client, clouds: list[PointCloud2], period: float) -> None:
        next_time = time.monotonic()
        while not self._stop.is_set():
            message = clouds[self.sent % len(clouds)]
            now = time.time_ns()
            message.header.stamp = tuple_to_stamp((now // 1_000_000_000, now % 1_000_000_000))
            client.clouds.publish(message)
            self.sent += 1
            next_time = max(next_time + period, time.monotonic() - period)  # no catch-up burst after a stall
            self._stop.wait(max(0.0, next_time - time.monotonic()))

    def stop(self) -> float:
        """Stop; returns the achieved rate (Hz)."""
        self._stop.set()
        self._thread.join(timeout=5)
        return self.sent / max(time.monotonic() - self.started, 1e-9)


def _load(client: _Client, process: NodeProcess, seconds: float, sample_every_s: float, prompt_every_s: float,
          reply_timeout_s: float, errors: dict[str, int], latencies: list[float],
          rss: list[tuple[float, float]]) -> tuple[float, int]:
    """Ask a prompt every ``prompt_every_s`` (one at a time) and sample the node's RSS for ``seconds``, counting
    replies by kind into ``errors`` and ``latencies``; returns (seconds it ran, prompts asked)."""
    started = time.monotonic()
    end = started + seconds
    next_sample = next_prompt = started
    sent_at: float | None = None
    replies_seen = client.answer_count()
    asked = 0
    while time.monotonic() < end:
        now = time.monotonic()
        if not process.running():
            errors["node_exited"] = 1
            break
        if now >= next_sample:
            rss.append((now - started, rss_bytes(process.process.pid) / MIB))
            next_sample += sample_every_s
        if sent_at is not None and client.answer_count() > replies_seen:
            received_at, text = client.answer(replies_seen)
            replies_seen += 1
            latencies.append(received_at - sent_at)
            for prefix, kind in (("Sorry", "reply_error"), ("busy", "busy"), ("No sensor frame", "no_frame")):
                errors[kind] += text.startswith(prefix)
            sent_at = None
        elif sent_at is not None and now - sent_at > reply_timeout_s + 120.0:
            errors["reply_missing"] += 1
            sent_at = None
        if sent_at is None and now >= next_prompt:
            client.prompts.publish(String(data=PROMPTS[asked % len(PROMPTS)]))
            asked += 1
            sent_at, next_prompt = time.monotonic(), now + prompt_every_s
        time.sleep(0.02)
    return time.monotonic() - started, asked


def run_soak(minutes: float, output: Path, *, checkpoint: str, rate_hz: float, prompt_every_s: float, points: int,
             sample_every_s: float, reply_timeout_s: float) -> dict[str, Any]:
    """Run the node for ``minutes`` under load and write the JSON report to ``output``."""
    use_large_message_transport()  # this process and the node (it inherits the environment)
    output.parent.mkdir(parents=True, exist_ok=True)
    parameters: dict[str, Any] = {"autostart": True, "diagnostics_period_s": 1.0, "reply_timeout_s": reply_timeout_s}
    if checkpoint:
        parameters["checkpoint"] = checkpoint
    spec = NodeProcessSpec(module="threed_llm_ros.ros.threed_llm_node", namespace=NAMESPACE,
                           parameter_files=[config_path("threed_llm.yaml")], parameters=parameters)
    clouds = _clouds(points)
    process = NodeProcess(spec, log_path=output.with_suffix(".log"))
    client = _Client()
    camera: _Camera | None = None
    errors = {"reply_error": 0, "busy": 0, "no_frame": 0, "reply_missing": 0, "node_exited": 0}
    latencies: list[float] = []
    rss: list[tuple[float, float]] = []
    try:
        deadline = time.monotonic() + STARTUP_S
        while client.latest_diagnostics().get("state") != "active":
            if not process.running() or time.monotonic() > deadline:
                raise RuntimeError(f"the node did not become active; its log: {output.with_suffix('.log')}")
            time.sleep(0.5)
        camera = _Camera(client, clouds, rate_hz)
        while int(client.latest_diagnostics().get("frames_received", 0)) == 0:  # the first prompt has a frame
            if not process.running() or time.monotonic() > deadline:
                raise RuntimeError(f"no frame reached the node; its log: {output.with_suffix('.log')}")
            time.sleep(0.2)
        duration, asked = _load(client, process, minutes * 60.0, sample_every_s, prompt_every_s, reply_timeout_s,
                                errors, latencies, rss)
        achieved, sent = camera.stop(), camera.sent
        camera = None
        time.sleep(2.5)  # the last diagnostics
        final = client.latest_diagnostics()
    finally:
        if camera is not None:
            camera.stop()
        client.close()
        process.stop()
    received = int(final.get("frames_received", 0))
    frames = {"sent": sent, "publish_rate_hz": round(achieved, 1), "received_by_node": received,
              "lost_in_transport": max(sent - received, 0), "dropped_stale_by_node": int(final.get("frames_dropped", 0)),
              "consumed_by_node": int(final.get("frames_consumed", 0))}
    errors["bad_messages"] = int(final.get("bad_messages", 0))
    settings = {"minutes": minutes, "rate_hz": rate_hz, "prompt_every_s": prompt_every_s, "points": points,
                "checkpoint": checkpoint or "(the node's default)", "reply_timeout_s": reply_timeout_s,
                "prompts_asked": asked, "cpu_count": os.cpu_count()}
    report = soak_report(duration_s=duration, rss_samples=rss, latencies_s=latencies, frames=frames, errors=errors,
                         settings=settings)
    output.write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    """``threed-llm bench --soak MINUTES [--rate-hz 30] [--prompt-every-s 5] [--output soak.json]``."""
    parser = argparse.ArgumentParser(prog="threed-llm bench --soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--soak", type=float, required=True, metavar="MINUTES", help="how long to run")
    parser.add_argument("--output", default="bench_out/soak.json", help="JSON report (the node's log goes next to it)")
    parser.add_argument("--checkpoint", default="", help="checkpoint directory ('' = the node's default)")
    parser.add_argument("--rate-hz", type=float, default=30.0, help="point-cloud rate")
    parser.add_argument("--prompt-every-s", type=float, default=5.0, help="a prompt this often (after the last reply)")
    parser.add_argument("--points", type=int, default=20_000, help="points per cloud")
    parser.add_argument("--sample-every-s", type=float, default=5.0, help="RSS sampling period")
    parser.add_argument("--reply-timeout-s", type=float, default=30.0, help="the node's reply_timeout_s")
    arguments = parser.parse_args(argv)
    for name in ("soak", "rate_hz", "prompt_every_s", "sample_every_s", "reply_timeout_s"):
        if not getattr(arguments, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if arguments.points < 1:
        parser.error("--points must be at least 1")
    report = run_soak(arguments.soak, Path(arguments.output), checkpoint=arguments.checkpoint, rate_hz=arguments.rate_hz,
                      prompt_every_s=arguments.prompt_every_s, points=arguments.points,
                      sample_every_s=arguments.sample_every_s, reply_timeout_s=arguments.reply_timeout_s)
    summary = {key: report[key] for key in ("rss_growth_after_warm_up_mb", "frames", "reply_latency_s", "errors",
                                            "flat_memory", "no_errors")}
    print(json.dumps(summary, indent=2))
    print(f"wrote {arguments.output}")
    return 0 if report["flat_memory"] and report["no_errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
