"""Reading the nodes' ``/diagnostics`` in the ROS tests."""


def latest_status(arrays, name: str):
    """The newest status whose name holds ``name`` among ``DiagnosticArray`` messages.

    Returns:
        (status, {key: value}), or (None, {}) when none has come.
    """
    for array in reversed(arrays):
        for status in array.status:
            if name in status.name:
                return status, {kv.key: kv.value for kv in status.values}
    return None, {}
