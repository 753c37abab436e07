"""``threed-llm view``: a live Foxglove view without a ROS install, from the ``foxglove-sdk`` WebSocket server.

    threed-llm up --foxglove            # the demo graph plus this bridge
    threed-llm view --port 8765         # next to any running graph (e.g. `threed-llm play BAG --start --loop`)

then open Foxglove, "Open connection" -> Foxglove WebSocket -> ``ws://localhost:8765``, and import
config/foxglove_layout.json. The bridge finds the graph's topics (every ``--discover-period`` seconds),
subscribes to each with raw (CDR) messages and logs them unchanged on a channel of the same name
with its ``ros2msg`` schema, so Foxglove decodes them as from a bag. On a robot with ROS 2,
``foxglove_bridge`` (``ros2 launch foxglove_bridge foxglove_bridge_launch.xml``) or RViz
(config/threed_llm.rviz) does this job.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from threed_llm_ros.bags import ros2_typestore
from threed_llm_ros.ros.bag_record import message_class
from threed_llm_ros.ros.qos import use_large_message_transport

NODE_NAME = "foxglove_live"
DEFAULT_PORT = 8765
# Graph plumbing, not data a viewer shows.
SKIPPED_PREFIXES = ("/rosout", "/parameter_events", "/diagnostics")
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class FoxgloveLive(Node):
    """Subscribes to every data topic of the graph and re-logs its CDR messages to a Foxglove WebSocket server."""

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT, discover_period_s: float = 1.0) -> None:
        super().__init__(NODE_NAME)
        import foxglove  # the optional live view: imported only here

        self._foxglove = foxglove
        self.server = foxglove.start_server(name="threed_llm", host=host, port=port)
        self.port = self.server.port
        self._store = ros2_typestore()
        self._channels: dict[str, object] = {}
        self.skipped: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self.create_timer(discover_period_s, self.discover)
        self.discover()

    def discover(self) -> None:
        """Subscribe to the topics that appeared since the last look."""
        for topic, types in self.get_topic_names_and_types():
            if topic in self._channels or topic in self.skipped or topic.startswith(SKIPPED_PREFIXES):
                continue
            if "/_action/" in topic or not types:
                continue
            msgtype = types[0]
            problem = self._subscribe(topic, msgtype)
            if problem:
                self.skipped[topic] = problem
                self.get_logger().info(f"not shown: {topic} ({problem})")

    def _subscribe(self, topic: str, msgtype: str) -> str:
        message_type = message_class(msgtype)
        if message_type is None:
            return f"{msgtype} is not installed here"
        if msgtype not in self._store.fielddefs:
            return f"no definition of {msgtype}"
        schema = self._store.generate_msgdef(msgtype, ros_version=2)[0]
        channel = self._foxglove.Channel(topic, message_encoding="cdr", schema=self._foxglove.Schema(
            name=msgtype, encoding="ros2msg", data=schema.encode()))
        latched = any(info.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
                      for info in self.get_publishers_info_by_topic(topic))
        self.create_subscription(message_type, topic, self._relay(topic, channel),
                                 LATCHED_QOS if latched else qos_profile_sensor_data, raw=True)
        self._channels[topic] = channel
        self.counts[topic] = 0
        self.get_logger().info(f"showing {topic} ({msgtype})")
        return ""

    def _relay(self, topic: str, channel: object) -> Callable[[bytes], None]:
        def relay(cdr: bytes) -> None:
            channel.log(cdr, log_time=time.time_ns())
            self.counts[topic] += 1

        return relay

    def stop(self) -> None:
        self.server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="threed-llm view", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="WebSocket port (0 = any free port)")
    parser.add_argument("--discover-period", type=float, default=1.0, help="seconds between looks for new topics")
    arguments, ros_arguments = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    use_large_message_transport()
    rclpy.init(args=[sys.argv[0], *ros_arguments])
    node = None
    try:
        node = FoxgloveLive(arguments.host, arguments.port, arguments.discover_period)
        print(f"Foxglove live view on ws://{arguments.host}:{node.port} (Foxglove: Open connection -> "
              "Foxglove WebSocket; layout: config/foxglove_layout.json)", flush=True)
        rclpy.spin(node)
        return 0
    except OSError as error:
        print(f"threed-llm view: cannot listen on {arguments.host}:{arguments.port}: {error} "
              "(give another --port)", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    finally:
        if node is not None:
            node.stop()
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
