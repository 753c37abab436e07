"""Bags without ROS: the real Ouster recordings (rosbag2 MCAP and ROS 1 MCAP) read as ROS 2 CDR, and MCAP
recordings written and read back with rosbags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from threed_llm_ros.bags import McapRecording, open_bag, recording_directory, ros2_typestore
from threed_llm_ros.errors import ConfigError

OUSTER_CLOUD = "/os1_cloud_node/points"


def _clouds(path: Path) -> list:
    bag = open_bag(path)
    return [(message, bag.deserialize(message)) for message in bag.messages({OUSTER_CLOUD})]


def test_ouster_rosbag2_reads_as_a_64x2048_lidar_cloud(realdata: Path) -> None:
    bag = open_bag(realdata / "rosbag" / "ouster_os1_rosbag2")
    assert {t.name: t.msgtype for t in bag.topics}[OUSTER_CLOUD] == "sensor_msgs/msg/PointCloud2"
    clouds = _clouds(realdata / "rosbag" / "ouster_os1_rosbag2")
    assert len(clouds) == 2
    message, cloud = clouds[0]
    assert (cloud.height, cloud.width, cloud.header.frame_id) == (64, 2048, "os1_lidar")
    assert {"x", "y", "z", "intensity", "ring", "range"} <= {field.name for field in cloud.fields}
    assert 0.1 < bag.duration_s < 0.2


def test_ros1_mcap_converts_to_the_same_cdr_as_the_ros2_bag(realdata: Path) -> None:
    """pointcloudset_test.mcap (ROS 1 encoding) and ouster_os1_rosbag2 hold the same recording."""
    ros1 = _clouds(realdata / "rosbag" / "pointcloudset_test.mcap")
    ros2 = _clouds(realdata / "rosbag" / "ouster_os1_rosbag2")
    assert open_bag(realdata / "rosbag" / "pointcloudset_test.mcap").ros1_mcap
    assert len(ros1) == len(ros2) == 2
    for (message1, cloud1), (message2, cloud2) in zip(ros1, ros2):
        assert cloud1.header.stamp.sec == cloud2.header.stamp.sec and cloud1.header.frame_id == cloud2.header.frame_id
        assert message1.cdr == message2.cdr  # the ROS 1 header's seq dropped, everything else byte for byte


def test_an_mcap_file_alone_opens_like_its_directory(realdata: Path) -> None:
    directory = realdata / "rosbag" / "ouster_os1_rosbag2"
    assert [m.cdr for m, _ in _clouds(directory / "ouster_os1_rosbag2.mcap")] == [m.cdr for m, _ in _clouds(directory)]


@pytest.mark.parametrize("make", ["missing", "no_metadata", "text_file"])
def test_a_bad_bag_path_names_the_problem(tmp_path: Path, make: str) -> None:
    path = {"missing": tmp_path / "none", "no_metadata": tmp_path, "text_file": tmp_path / "bag.txt"}[make]
    if make == "text_file":
        path.write_text("x")
    with pytest.raises(ConfigError, match="BAG"):
        open_bag(path)


def test_a_recording_reads_back_with_rosbags_including_our_own_messages(tmp_path: Path) -> None:
    store = ros2_typestore()
    String = store.types["std_msgs/msg/String"]
    Plan = store.types["threed_llm_interfaces/msg/Plan"]
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    plan = Plan(header=Header(stamp=Time(sec=1, nanosec=2), frame_id="f"), instruction="bring", steps=[],
                source="program", text="")
    recording = McapRecording(tmp_path / "out.mcap")
    assert recording.directory == tmp_path / "out" == recording_directory(tmp_path / "out.mcap")
    recording.add_topic("/answer", "std_msgs/msg/String")
    recording.add_topic("/plan", "threed_llm_interfaces/msg/Plan")
    recording.write("/answer", 10, bytes(store.serialize_cdr(String(data="a red cup"), "std_msgs/msg/String")))
    recording.write("/plan", 20, bytes(store.serialize_cdr(plan, "threed_llm_interfaces/msg/Plan")))
    recording.close()
    assert recording.mcap_path.is_file() and (recording.directory / "metadata.yaml").is_file()
    with AnyReader([recording.directory]) as reader:  # rosbags with the schemas the MCAP carries
        topics = {c.topic: c.msgtype for c in reader.connections}
        assert topics == {"/answer": "std_msgs/msg/String", "/plan": "threed_llm_interfaces/msg/Plan"}
        decoded = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()]
    assert decoded[0].data == "a red cup" and decoded[1].header.frame_id == "f" and decoded[1].source == "program"
    with pytest.raises(ConfigError, match="exists already"):
        McapRecording(tmp_path / "out.mcap")
    with pytest.raises(ConfigError, match="no definition"):
        McapRecording(tmp_path / "other").add_topic("/x", "nope_msgs/msg/Nope")


def test_ouster_cloud_values_decode(realdata: Path) -> None:
    """The x/y/z of the decoded cloud are a lidar's: ranges 0.6-15 m around the sensor, z up (REP-103)."""
    _, cloud = _clouds(realdata / "rosbag" / "ouster_os1_rosbag2")[0]
    offsets = {field.name: field.offset for field in cloud.fields}
    raw = np.frombuffer(bytes(cloud.data), dtype=np.uint8).reshape(-1, cloud.point_step)
    xyz = np.stack([raw[:, offsets[a]:offsets[a] + 4].copy().view(np.float32)[:, 0] for a in "xyz"], axis=1)
    ranges = np.linalg.norm(xyz, axis=1)
    valid = ranges > 0
    assert valid.sum() > 30000
    assert 0.5 < ranges[valid].min() and ranges[valid].max() < 20.0
    assert np.ptp(xyz[valid, 2]) < np.ptp(xyz[valid, 0])  # a horizontal lidar: flatter in z than in x


def test_a_ros1_bag_reads_like_the_ros1_mcap_it_was_written_from(realdata: Path, tmp_path: Path) -> None:
    """A ROS 1 .bag (written here with rosbags from the ROS 1 MCAP's raw messages) gives the same CDR."""
    from mcap.reader import make_reader
    from rosbags.rosbag1 import Writer as Ros1Writer
    from rosbags.typesys import Stores, get_typestore

    noetic = get_typestore(Stores.ROS1_NOETIC)
    msgtype = "sensor_msgs/msg/PointCloud2"
    msgdef, md5sum = noetic.generate_msgdef(msgtype, ros_version=1)
    with Ros1Writer(tmp_path / "ouster.bag") as writer:
        connection = writer.add_connection(OUSTER_CLOUD, msgtype, msgdef=msgdef, md5sum=md5sum)
        with (realdata / "rosbag" / "pointcloudset_test.mcap").open("rb") as stream:
            for _, _, message in make_reader(stream).iter_messages(topics=[OUSTER_CLOUD]):
                writer.write(connection, message.log_time, message.data)
    from_bag = _clouds(tmp_path / "ouster.bag")
    from_mcap = _clouds(realdata / "rosbag" / "pointcloudset_test.mcap")
    assert len(from_bag) == 2 and [m.cdr for m, _ in from_bag] == [m.cdr for m, _ in from_mcap]
    assert from_bag[0][0].msgtype == msgtype and from_bag[0][1].header.frame_id == "os1_lidar"


def test_a_sqlite3_rosbag2_reads_like_the_mcap_one(realdata: Path, tmp_path: Path) -> None:
    """`ros2 bag record`'s other storage: the same messages written to .db3 come back the same."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    clouds = _clouds(realdata / "rosbag" / "ouster_os1_rosbag2")
    with Writer(tmp_path / "sqlite_bag", version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        connection = writer.add_connection(OUSTER_CLOUD, clouds[0][0].msgtype, typestore=ros2_typestore())
        for message, _ in clouds:
            writer.write(connection, message.log_time_ns, message.cdr)
    assert list((tmp_path / "sqlite_bag").glob("*.db3"))
    assert [m.cdr for m, _ in _clouds(tmp_path / "sqlite_bag")] == [m.cdr for m, _ in clouds]


@pytest.mark.parametrize("arguments, expected", [
    (["/nonexistent_bag"], "does not exist"),
    (["{ouster}", "--topics", "/nope"], "['/nope'] not in"),
    (["{ouster}", "--topic-map", "points"], "write /recorded/topic:/published/topic"),
])
def test_play_refuses_bad_arguments_in_one_line(realdata: Path, capsys, arguments: list[str], expected: str) -> None:
    from threed_llm_ros.ros.bag_play import main as play_main

    ouster = str(realdata / "rosbag" / "ouster_os1_rosbag2")
    assert play_main([argument.format(ouster=ouster) for argument in arguments]) == 2
    error = capsys.readouterr().err.strip()
    assert expected in error and len(error.splitlines()) == 1 and error.startswith("threed-llm play:")
