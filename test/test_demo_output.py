"""What the demo and the prompt client show a person (issue 18): each reply's text once, coordinates
with their frame, labels that do not overlap, and simulator previews with titles and a depth scale."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from threed_llm_ros.data.sim.cli import preview_figure
from threed_llm_ros.data.sim.frames import simulate
from threed_llm_ros.geometry.camera import CameraIntrinsics

rclpy = pytest.importorskip("rclpy")  # the demo and the prompt client are ROS programs (messages only here)

from geometry_msgs.msg import PoseStamped  # noqa: E402

from threed_llm_ros.ros.demo import place_labels, reply_record  # noqa: E402
from threed_llm_ros.ros.prompt_client import Reply, print_reply  # noqa: E402

FRAME = "camera_color_optical_frame"


def _reply(intent: str, answer: str, pieces: list[str]) -> Reply:
    return Reply("where is the red cup?", answer, 1.23, 0.4, pieces=pieces, intent=intent, frame_id=FRAME)


def test_a_streamed_reply_is_printed_once_with_its_frame(capsys: pytest.CaptureFixture[str]) -> None:
    answer = "red cup: at (0.10, 0.20, 1.50) m in camera_color_optical_frame"
    reply = _reply("find", answer, [answer])
    reply.target_pose = PoseStamped()
    reply.target_pose.header.frame_id = FRAME
    reply.target_pose.pose.position.z = 1.5
    print(">>> where is the red cup?")
    for piece in reply.pieces:  # what the client prints as the feedback arrives
        print(piece, end="")
    print_reply(reply, reply.prompt, streamed=True)
    shown = capsys.readouterr().out
    assert shown.count(answer) == 1 and shown.count(">>> where is the red cup?") == 1, shown
    assert f"target pose: (0.00, 0.00, 1.50) m in {FRAME}" in shown


def test_an_unstreamed_reply_and_a_plan_show_the_frame_of_each_goal(capsys: pytest.CaptureFixture[str]) -> None:
    reply = _reply("plan", "navigate_to(cup) ; pick(cup)", [])
    reply.plan = {"steps": [{"action": "navigate_to", "target": "cup", "pose": {"position": [1.0, 0.0, 2.0]}},
                            {"action": "pick", "target": "cup"}]}
    print_reply(reply, reply.prompt)
    shown = capsys.readouterr().out
    assert shown.count("navigate_to(cup) ; pick(cup)") == 1
    assert f"1. navigate_to(cup) goal (1.00, 0.00, 2.00) m in {FRAME}" in shown
    assert reply_record(reply)["frame_id"] == FRAME


def test_a_text_that_grew_after_streaming_prints_only_its_rest(capsys: pytest.CaptureFixture[str]) -> None:
    reply = _reply("question", "a long answer [cut short: reply_timeout_s (30 s) reached]", ["a long ", "answer"])
    print("".join(reply.pieces), end="")
    print_reply(reply, reply.prompt, streamed=True)
    assert capsys.readouterr().out.startswith("a long answer [cut short: reply_timeout_s (30 s) reached]\n")


def test_topdown_labels_do_not_overlap() -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    figure = Figure(figsize=(8, 8))
    FigureCanvasAgg(figure)  # what pyplot gives the demo under the Agg backend
    axes = figure.subplots()
    axes.set_xlim(-2.2, 2.3)
    axes.set_ylim(-0.2, 4.4)
    axes.set_aspect("equal")
    # a crowded table top: six objects within 20 cm, as the simulator's cups and bottles often are
    anchors = [(0.05 * i, 3.0 + 0.03 * i, f"found: red cup, confidence 0.{80 + i}", "red") for i in range(6)]
    # and labels of neighbouring objects around it (those of a demo frame whose labels ran into each other)
    anchors += [(-0.37, 2.92, "pink lamp", "black"), (-0.55, 2.95, "red table", "black"),
                (-0.9, 2.9, "grey table", "black"), (0.3, 2.5, "brown cup", "black"), (1.5, 1.0, "table", "black")]
    artists = place_labels(axes, anchors)
    figure.canvas.draw()  # where the labels really are once drawn
    renderer = figure.canvas.get_renderer()
    boxes = [Text.get_window_extent(artist, renderer) for artist in artists]  # the text, without leader lines
    for first, second in itertools.combinations(boxes, 2):
        assert not first.overlaps(second), (first, second)


def test_sim_preview_panels_have_titles_and_a_depth_scale() -> None:
    frame = simulate(2, intrinsics=CameraIntrinsics.from_field_of_view(160, 120, 60.0))
    figure = preview_figure(frame)
    images = [axes for axes in figure.axes if axes.images]
    titles = [axes.get_title() for axes in images]
    assert len(images) == 3 and all(titles), titles
    assert titles[1].startswith("sensor depth")
    colour_bars = [axes for axes in figure.axes if axes.get_ylabel() == "depth (m)"]
    assert len(colour_bars) == 1, "the depth panel has a scale in metres"
    low, high = colour_bars[0].get_ylim()
    assert low == 0.0 and np.isclose(high, np.nanmax(frame.depth_clean_m))


def test_the_demo_shows_what_the_node_is_loading(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from threed_llm_ros.ros.demo import _show_progress

    log = tmp_path / "threed_llm_node.log"
    assert _show_progress(log, "") == ""  # no log yet: nothing to show
    log.write_text("[INFO] [1.0] [threed_llm_node]: loading models/threed-llm-mini: SmolLM2-135M from its GGUF\n"
                   "Loading weights: 100%\n")
    shown = _show_progress(log, "")
    assert _show_progress(log, shown) == shown  # the same line is not printed twice
    assert capsys.readouterr().out == "  node: loading models/threed-llm-mini: SmolLM2-135M from its GGUF\n"
