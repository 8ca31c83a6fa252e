"""Exception classes shared by the iphd library; each message says what was wrong and what to do."""


class IphdError(Exception):
    """Base class of every error the iphd library raises on purpose."""


class CalibrationError(IphdError):
    """A rig calibration file is missing, malformed or physically implausible."""


class FrameError(IphdError):
    """An input frame has the wrong encoding, size, dtype or content for the stage that got it."""


class CameraInfoError(IphdError):
    """Camera intrinsics are missing or inconsistent with the images they describe."""


class SensorError(IphdError):
    """A sensor could not be opened, configured or read."""


class DeviceNotFoundError(SensorError):
    """The requested sensor is not connected (the message lists what was found instead)."""


class RadiometryError(SensorError):
    """A thermal stream does not carry TLinear radiometric values in centi-kelvin."""


class ConfigError(IphdError):
    """A stage configuration has an invalid value."""


class FrameTimeoutError(SensorError):
    """No frame arrived from a sensor within the configured timeout."""


class EndOfStreamError(SensorError):
    """A recording being played back has no more frames."""


class DatasetError(IphdError):
    """A dataset, bag or output folder is missing, malformed or would be overwritten."""


class CheckpointError(IphdError):
    """A model checkpoint is missing, corrupt, or does not match the code that loads it."""


def load_failure(exc: BaseException) -> str:
    """Why a file did not load, for a message: ``"Type: first line"``, without unsafe advice.

    torch's ``weights_only`` refusal and numpy's ``allow_pickle`` refusal suggest loading the
    file again with pickling allowed, which runs whatever code the file holds; iphd's files
    never need that, so such a refusal reads as what it means here instead.
    """
    text = str(exc)
    if "Unsupported global" in text or "Object arrays cannot be loaded" in text:
        return "it holds pickled Python objects, which iphd files never do"
    if "weights_only" in text or "allow_pickle" in text:
        # The loader fell back to unpickling bytes that are not its format at all.
        return "its bytes are not a file of this kind: another file, or a damaged one"
    first = text.strip().splitlines()[0] if text.strip() else ""
    if len(first) > 200:
        first = first[:197] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
