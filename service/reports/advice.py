"""What a failure report tells the clinician to do, by failure code (``PipelineError.code`` or the
worker's own codes); :data:`RETAKE` for the rest. Plain text, shared by the full and the minimal report."""

from __future__ import annotations

RETAKE = ("Retake a frontal photo: face towards the camera, head level (not turned or tilted), mouth closed "
          "and relaxed, the whole face visible and large in the frame, even light without strong shadows. "
          "Then send it again.")
ADVICE = {"unreadable_image": "Send the photo again as a standard JPEG, PNG or DICOM image; if it was, retake it.",
          "unreadable_dicom_pixels": "Send the photo again from the original (the copy received was damaged or "
                                     "uses an unsupported compression); retake it only if the original is damaged too.",
          "intake": "Send the photo again with the patient's details (Patient ID) filled in; it need not be retaken.",
          "model_error": "This is a fault of the scoring service, not of the photo: contact the service "
                         "administrator. The photo need not be retaken.",
          "internal_error": "This is a fault of the scoring service, not of the photo: contact the service "
                            "administrator. The photo need not be retaken.",
          "lease_expired": "This is a fault of the scoring service, not of the photo: contact the service "
                           "administrator. The photo need not be retaken."}
