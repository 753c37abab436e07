"""Recorded bags without ROS: read rosbag2 / ROS 1 recordings as ROS 2 CDR, and write MCAP recordings.

Reading (:func:`open_bag`) takes what robot users record:

* a rosbag2 directory (``metadata.yaml`` + ``.mcap`` or ``.db3``), or a ROS 2 ``.mcap`` file alone;
* a ROS 1 ``.bag``;
* a ROS 1 MCAP (profile ``ros1``, ``ros1msg`` schemas, e.g. a converted ``.bag``).

Every message comes out as ROS 2 CDR bytes with its ROS 2 type name (``sensor_msgs/msg/PointCloud2``),
so a ROS 2 publisher can send it unchanged (ROS 1 messages are converted by ``rosbags``: the
header's ``seq`` is dropped, the rest has the same wire layout). Writing (:class:`McapRecording`)
makes a rosbag2 directory with MCAP storage and CDR messages, which ``ros2 bag play``, Foxglove and
``rosbags`` all open; schemas are embedded, this package's own messages (``threed_llm_interfaces``)
included. Both use ``rosbags`` (pure Python) and, for ROS 1 MCAP, ``mcap``; neither needs rclpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from rosbags.convert.converter import is_same_wireformat
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from threed_llm_ros.errors import ConfigError
from threed_llm_ros.resources import share_directory

ROS2_STORE = Stores.ROS2_KILTED
INTERFACES_PACKAGE = "threed_llm_interfaces"


@dataclass(frozen=True)
class BagTopic:
    """One topic of a bag: its name, ROS 2 type and message count."""

    name: str
    msgtype: str
    count: int
    problem: str = ""  # why it cannot be played as ROS 2 ("" = it can)


@dataclass(frozen=True)
class BagMessage:
    """One recorded message as ROS 2 CDR: ``log_time_ns`` is the recorder's receive time."""

    topic: str
    msgtype: str
    log_time_ns: int
    cdr: bytes


def ros2_typestore() -> Typestore:
    """The ROS 2 (Kilted) type store plus this package's interfaces (msg/*.msg), for decoding and writing."""
    store = get_typestore(ROS2_STORE)
    msg_directory = share_directory() / "msg"
    types = {}
    for path in sorted(msg_directory.glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{INTERFACES_PACKAGE}/msg/{path.stem}"))
    store.register(types)
    return store


def _ros2_name(msgtype: str) -> str:
    """'sensor_msgs/PointCloud2' (ROS 1) -> 'sensor_msgs/msg/PointCloud2'."""
    package, _, name = msgtype.partition("/")
    return msgtype if "/msg/" in msgtype or not name else f"{package}/msg/{name}"


def _is_ros1_mcap(path: Path) -> bool:
    if path.suffix != ".mcap" or not path.is_file():
        return False
    from mcap.reader import make_reader

    with path.open("rb") as stream:
        return make_reader(stream).get_header().profile == "ros1"


class Bag:
    """A recorded bag opened for reading; use :func:`open_bag`. Iterate :meth:`messages` in log-time order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.store = ros2_typestore()
        self.ros1_mcap = _is_ros1_mcap(path)
        self._ros1_store: Typestore | None = None  # the types as a ROS 1 bag defines them
        self.topics = [self._checked(topic) for topic in self._read_topics()]

    def _read_topics(self) -> list[BagTopic]:
        if self.ros1_mcap:
            from mcap.reader import make_reader

            with self.path.open("rb") as stream:
                summary = make_reader(stream).get_summary()
            counts = summary.statistics.channel_message_counts if summary and summary.statistics else {}
            self._ros1_store = get_typestore(Stores.EMPTY)
            topics = []
            for channel_id, channel in (summary.channels if summary else {}).items():
                schema = summary.schemas.get(channel.schema_id)
                if schema is not None and schema.encoding == "ros1msg":
                    msgtype = _ros2_name(schema.name)
                    types = get_types_from_msg(schema.data.decode(), msgtype)
                    self._ros1_store.register({n: t for n, t in types.items() if n not in self._ros1_store.fielddefs})
                    topics.append(BagTopic(channel.topic, msgtype, counts.get(channel_id, 0)))
            return topics
        with self._reader() as reader:
            if not reader.is2:
                self._ros1_store = reader.typestore
            return [BagTopic(c.topic, c.msgtype, c.msgcount) for c in reader.connections]

    @property
    def is_ros1(self) -> bool:
        """True for a ROS 1 .bag or ROS 1 MCAP (its messages are converted to ROS 2 CDR)."""
        return self._ros1_store is not None

    def field_names(self, msgtype: str) -> list[str]:
        """The top-level field names of ``msgtype`` as the messages will be serialized (ROS 2 CDR)."""
        return [name for name, _ in self.store.fielddefs[msgtype][1]]

    def _checked(self, topic: BagTopic) -> BagTopic:
        """A ROS 1 topic converts to ROS 2 CDR when its layout matches ROS 2's (or ROS 2 lacks the type)."""
        if self._ros1_store is None:
            return topic
        msgtype = topic.msgtype
        if msgtype not in self.store.fielddefs:  # e.g. a driver's own message: ROS 2 takes the bag's definition
            types = get_types_from_msg(self._ros1_store.generate_msgdef(msgtype, ros_version=2)[0], msgtype)
            types.pop("std_msgs/msg/Header", None)  # the ROS 2 header: the converter drops ROS 1's seq
            self.store.register({name: value for name, value in types.items() if name not in self.store.fielddefs})
            return topic
        try:
            same = is_same_wireformat(self._ros1_store, self.store, msgtype, msgtype)
        except KeyError:
            same = False
        return topic if same else BagTopic(topic.name, msgtype, topic.count,
                                           f"its ROS 1 definition differs from ROS 2's {msgtype}")

    def _reader(self) -> AnyReader:
        try:
            return AnyReader([self.path], default_typestore=self.store)
        except AnyReaderError as error:
            raise ConfigError("BAG", f"{self.path} cannot be read: {error}",
                              "give a rosbag2 directory, a .mcap or a ROS 1 .bag") from None

    @property
    def duration_s(self) -> float:
        """Seconds from the first to the last message (by log time), from the bag's summary."""
        if self.ros1_mcap:
            from mcap.reader import make_reader

            with self.path.open("rb") as stream:
                summary = make_reader(stream).get_summary()
            statistics = summary.statistics if summary is not None else None
            return (statistics.message_end_time - statistics.message_start_time) / 1e9 if statistics else 0.0
        with self._reader() as reader:
            return max(reader.duration - 1, 0) / 1e9  # rosbags counts end - start + 1 ns

    def messages(self, topics: set[str] | None = None) -> Iterator[BagMessage]:
        """The messages of ``topics`` (None = all playable) as ROS 2 CDR, in log-time order."""
        playable = {t.name for t in self.topics if not t.problem and (topics is None or t.name in topics)}
        if self.ros1_mcap:
            yield from self._ros1_mcap_messages(playable)
            return
        with self._reader() as reader:
            connections = [c for c in reader.connections if c.topic in playable]
            for connection, log_time_ns, raw in reader.messages(connections=connections):
                cdr = bytes(raw) if reader.is2 else bytes(self.store.ros1_to_cdr(raw, connection.msgtype))
                yield BagMessage(connection.topic, connection.msgtype, log_time_ns, cdr)

    def _ros1_mcap_messages(self, topics: set[str]) -> Iterator[BagMessage]:
        from mcap.reader import make_reader

        with self.path.open("rb") as stream:
            for schema, channel, message in make_reader(stream).iter_messages(topics=list(topics), log_time_order=True):
                if schema is None or schema.encoding != "ros1msg":
                    continue
                msgtype = _ros2_name(schema.name)
                yield BagMessage(channel.topic, msgtype, message.log_time, bytes(self.store.ros1_to_cdr(message.data,
                                                                                                        msgtype)))

    def deserialize(self, message: BagMessage) -> object:
        """The message as a rosbags dataclass (for inspection and tests)."""
        return self.store.deserialize_cdr(message.cdr, message.msgtype)


def open_bag(path: str | Path) -> Bag:
    """Open a rosbag2 directory (mcap or sqlite3), a .mcap (ROS 2 or ROS 1) or a ROS 1 .bag; else ConfigError."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError("BAG", f"{path} does not exist", "give a rosbag2 directory, a .mcap or a .bag file")
    if path.is_file() and path.suffix not in (".mcap", ".bag"):
        raise ConfigError("BAG", f"{path} is not a .mcap or .bag file", "give a rosbag2 directory or one of those")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        raise ConfigError("BAG", f"{path} has no metadata.yaml",
                          "give a rosbag2 directory (as `ros2 bag record` writes)")
    return Bag(path)


def recording_directory(path: str | Path) -> Path:
    """Where a recording named ``path`` goes: ``out.mcap`` -> directory ``out/`` holding ``out.mcap``."""
    path = Path(path).expanduser()
    return path.with_suffix("") if path.suffix == ".mcap" else path


class McapRecording:
    """A rosbag2 directory with MCAP storage and ROS 2 CDR messages, written as messages arrive.

    ``add_topic`` once per topic (type from the ROS 2 store or msg/), then ``write`` serialized
    messages; ``close`` writes metadata.yaml. The MCAP file is ``<directory>/<name>.mcap``.
    """

    def __init__(self, path: str | Path) -> None:
        self.directory = recording_directory(path)
        if self.directory.exists():
            raise ConfigError("--record", f"{self.directory} exists already", "remove it or give another name")
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        self.store = ros2_typestore()
        self._writer = Writer(self.directory, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections: dict[str, object] = {}
        self.counts: dict[str, int] = {}

    @property
    def mcap_path(self) -> Path:
        return self.directory / f"{self.directory.name}.mcap"

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Declare ``topic`` with ROS 2 type ``msgtype`` (e.g. 'visualization_msgs/msg/MarkerArray')."""
        if topic in self._connections:
            return
        if msgtype not in self.store.fielddefs:
            raise ConfigError("--record", f"no definition of {msgtype} for {topic}", "record only ROS 2 standard or "
                              "threed_llm_interfaces types")
        self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=self.store)
        self.counts[topic] = 0

    def write(self, topic: str, log_time_ns: int, cdr: bytes) -> None:
        """Append one serialized (CDR) message of a declared topic."""
        self._writer.write(self._connections[topic], int(log_time_ns), cdr)
        self.counts[topic] += 1

    def close(self) -> None:
        """Finish the MCAP and write metadata.yaml (idempotent)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None  # type: ignore[assignment]
