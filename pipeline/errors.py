"""Typed errors raised by the image-science pipeline.

Every error carries one sentence a clinician or operator can act on. The service
records ``str(error)`` as the reason a job failed, and the CLI prints it on
stderr with exit code 2.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class: the photo cannot be appraised, for the reason in the message."""

    #: Stable machine-readable code for databases and logs.
    code = "pipeline_error"


class UnreadableImageError(PipelineError):
    """The input is not an image we can decode."""

    code = "unreadable_image"


class NoFaceError(PipelineError):
    """No face, or only faces scoring below the detection threshold."""

    code = "no_face"


class FaceTooSmallError(PipelineError):
    """The best face is smaller than the minimum size the method needs."""

    code = "face_too_small"


class ImplausibleLandmarksError(PipelineError):
    """The 68 landmarks do not form a plausible face."""

    code = "implausible_landmarks"


class NotFrontalError(PipelineError):
    """The head is turned or tilted beyond the configured limits."""

    code = "not_frontal"


class ModelError(PipelineError):
    """A model file is missing, malformed, unsafe or inconsistent."""

    code = "model_error"
