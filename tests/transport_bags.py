"""Bags as a robot records them: other drivers' topic names, images on compressed transports."""

import numpy as np

from iphd.compressed_images import COMPRESSED_IMAGE
from iphd.data.rosbag import CALIBRATION_TOPIC, STRING, BagReader, compress_image, typestore


def write_transport_bag(src, dst, transports, *, rename=None, stop_ns=None, edit=None,
                        storage="sqlite3", calibration_text=None):
    """Copy bag ``src`` to ``dst``, each image topic of ``transports`` (topic -> transport)
    written as a CompressedImage on ``<name>/<transport>``; ``rename`` gives topics other
    names (``name``), ``stop_ns`` ends the copy at that log time, ``edit(topic, index,
    msg)`` may change the ``index``-th compressed message of a topic before it is written,
    ``storage`` is ``sqlite3`` or ``mcap``, and ``calibration_text`` is published on
    ``rig_calibration`` first, as the fusion node of a recorded graph does. The copy stores
    no calibration in its metadata, and leaves out ``src``'s ``rig_calibration``, which a
    driver's recording does not have."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    rename = rename or {}
    store = typestore()
    plugin = StoragePlugin[storage.upper()]
    writer = Writer(dst, version=Writer.VERSION_LATEST, storage_plugin=plugin)
    writer.open()
    connections, counts = {}, {}
    with BagReader(src) as reader:
        stop = None if stop_ns is None else reader.start_ns + stop_ns
        if calibration_text is not None:
            conn = writer.add_connection("/rig_calibration", STRING, typestore=store)
            text = store.types[STRING](data=calibration_text)
            writer.write(conn, reader.start_ns, store.serialize_cdr(text, STRING))
        for raw in reader.raw_messages(stop_ns=stop):
            if raw.topic == CALIBRATION_TOPIC:
                continue
            topic, msgtype, data = rename.get(raw.topic, raw.topic), raw.msgtype, raw.data
            if raw.topic in transports:
                msg = compress_image(store.deserialize_cdr(data, msgtype), transports[raw.topic],
                                     store=store)
                index = counts[raw.topic] = counts.get(raw.topic, -1) + 1
                if edit is not None:
                    msg = edit(raw.topic, index, msg)
                topic, msgtype = f"{topic}/{transports[raw.topic]}", COMPRESSED_IMAGE
                data = store.serialize_cdr(msg, msgtype)
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(connections[topic], raw.log_ns, data)
    writer.close()
    return dst


def write_calibration_recording(path, texts, t0_ns=1_700_000_000_000_000_000):
    """A bag like ``ros2 bag record`` of a running graph leaves, as far as calibration goes:
    none in its metadata, the fusion node's on ``rig_calibration`` (``texts``: topic -> the
    YAML texts published on it, in order, 1 s apart)."""
    from rosbags.rosbag2 import Writer

    store = typestore()
    with Writer(path, version=Writer.VERSION_LATEST) as writer:
        for topic, messages in texts.items():
            conn = writer.add_connection(topic, STRING, typestore=store)
            for i, text in enumerate(messages):
                data = store.serialize_cdr(store.types[STRING](data=text), STRING)
                writer.write(conn, t0_ns + i * 1_000_000_000, data)
    return path


def write_graph_recording(src, dst, *, registered="thermal/registered", outputs=False,
                          calibration_text=None, clock=False, static_tf=(), qos=True):
    """``src`` with what ``ros2 bag record -a`` of a running graph adds.

    With each depth frame, the fusion node's registered image (a copy of the depth image, on
    ``registered``) and, with ``outputs``, the detector's ``detections`` and the tracker's
    ``tracks`` (one person, track id 99). At the start, ``calibration_text`` on
    ``rig_calibration``, with ``clock`` a ``/clock`` at 0 (a clock not the player's), and
    after ``src``'s own, one more ``/tf_static`` message of ``static_tf`` (StaticTransforms,
    another publisher's). Topics ``src`` offered latched stay latched, unless ``qos`` is False
    (no offered QoS is stored, as by tools that keep none).
    """
    from rosbags.rosbag2 import Writer

    from iphd.data.rosbag import (
        IMAGE,
        LATCHED_QOS,
        PERSON_DETECTIONS,
        PERSON_TRACKS,
        TF_MESSAGE,
        TF_STATIC,
        header_stamp_ns,
    )

    store = typestore()
    t = store.types
    point = t["geometry_msgs/msg/Point"](0.0, 0.0, 2.0)

    def header(stamp, frame="depth_optical_frame"):
        time = t["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9)
        return t["std_msgs/msg/Header"](stamp=time, frame_id=frame)

    with BagReader(src) as reader, Writer(dst, version=Writer.VERSION_LATEST) as writer:
        conns = {}
        topics = reader.topics

        def write(topic, msgtype, log_ns, msg):
            if topic not in conns:
                latched = qos and topic in topics and topics[topic].latched
                conns[topic] = writer.add_connection(
                    topic, msgtype, typestore=store,
                    offered_qos_profiles=[LATCHED_QOS] if latched else [])
            data = msg if isinstance(msg, bytes | memoryview) else store.serialize_cdr(msg,
                                                                                       msgtype)
            writer.write(conns[topic], log_ns, data)

        if calibration_text is not None:
            write("rig_calibration", STRING, reader.start_ns, t[STRING](data=calibration_text))
        if clock:
            stamp = t["builtin_interfaces/msg/Time"](sec=0, nanosec=0)
            write("/clock", "rosgraph_msgs/msg/Clock", reader.start_ns,
                  t["rosgraph_msgs/msg/Clock"](clock=stamp))
        if static_tf:
            tf = t[TF_MESSAGE](transforms=[
                t["geometry_msgs/msg/TransformStamped"](
                    header=header(reader.start_ns, tf_.parent),
                    child_frame_id=tf_.child,
                    transform=t["geometry_msgs/msg/Transform"](
                        translation=t["geometry_msgs/msg/Vector3"](*tf_.translation_m),
                        rotation=t["geometry_msgs/msg/Quaternion"](*tf_.rotation_xyzw)))
                for tf_ in static_tf])
        for raw in reader.raw_messages():
            write(raw.topic, raw.msgtype, raw.log_ns, raw.data)
            if raw.topic == TF_STATIC and static_tf:
                write(TF_STATIC, TF_MESSAGE, raw.log_ns + 1, tf)
            if raw.topic != "depth/image_raw":
                continue
            write(registered, IMAGE, raw.log_ns + 1, raw.data)
            if not outputs:
                continue
            stamp = header_stamp_ns(store.deserialize_cdr(raw.data, IMAGE))
            detection = t["iphd_msgs/msg/PersonDetection"](
                score=0.9, x1=50.0, y1=30.0, x2=70.0, y2=90.0, position=point,
                temperature_k=305.0)
            write("detections", PERSON_DETECTIONS, raw.log_ns + 2, t[PERSON_DETECTIONS](
                header=header(stamp), image_width=128, image_height=96, detections=[detection]))
            track = t["iphd_msgs/msg/PersonTrack"](
                id=99, state=1, score=0.9, position=point,
                velocity=t["geometry_msgs/msg/Vector3"](0.0, 0.0, 0.0), x1=50.0, y1=30.0,
                x2=70.0, y2=90.0, age_s=0.0, time_since_update_s=0.0,
                embedding=np.zeros(0, np.float32))
            write("tracks", PERSON_TRACKS, raw.log_ns + 3,
                  t[PERSON_TRACKS](header=header(stamp), tracks=[track]))
    return dst
