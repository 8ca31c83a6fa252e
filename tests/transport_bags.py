"""Bags as a robot records them: other drivers' topic names, images on compressed transports."""

from iphd.compressed_images import COMPRESSED_IMAGE
from iphd.data.rosbag import STRING, BagReader, compress_image, typestore


def write_transport_bag(src, dst, transports, *, rename=None, stop_ns=None, edit=None,
                        storage="sqlite3", calibration_text=None):
    """Copy bag ``src`` to ``dst``, each image topic of ``transports`` (topic -> transport)
    written as a CompressedImage on ``<name>/<transport>``; ``rename`` gives topics other
    names (``name``), ``stop_ns`` ends the copy at that log time, ``edit(topic, index,
    msg)`` may change the ``index``-th compressed message of a topic before it is written,
    ``storage`` is ``sqlite3`` or ``mcap``, and ``calibration_text`` is published on
    ``rig_calibration`` first, as the fusion node of a recorded graph does. The copy stores
    no calibration in its metadata."""
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
