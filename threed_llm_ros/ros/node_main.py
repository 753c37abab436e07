"""The ``main`` of a lifecycle node: one home for start-up, autostart and a clean shutdown."""

from __future__ import annotations

from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn

from threed_llm_ros.errors import ConfigError


def run_lifecycle_node(make_node: Callable[[], LifecycleNode], node_name: str, threads: int,
                       args: list[str] | None = None) -> int:
    """Create the node, and with its ``autostart`` parameter configure and activate it at once;
    spin a ``threads``-thread executor until shutdown. Exit code 1 when the node cannot start
    (a bad parameter: one fatal line) or a transition fails, else 0."""
    rclpy.init(args=args)
    node: LifecycleNode | None = None
    executor = MultiThreadedExecutor(num_threads=threads)
    try:
        node = make_node()
        executor.add_node(node)
        if node.get_parameter("autostart").value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("autostart: configure failed (see above); exiting")
                return 1
            if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("autostart: activate failed; exiting")
                return 1
        executor.spin()
    except ConfigError as error:
        rclpy.logging.get_logger(node_name).fatal(f"cannot start: {error}")
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
