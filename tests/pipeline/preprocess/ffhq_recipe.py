"""Test oracle: FFHQ's alignment recipe (NVlabs ffhq-dataset, ``recreate_aligned_images``), written
literally from its published description and independently of pipeline/preprocess/align.py.

Whole-photo Lanczos shrink, crop, float32 reflect padding with scipy's exact Gaussian and the
whole-image mask, PIL's QUAD transform to ``transform_size``² with bilinear sampling, Lanczos resize.
Slow and memory-hungry on purpose: it is the reference, not a fast path. Also used by
benchmarks/alignment_fidelity.py.
"""

from __future__ import annotations

import cv2
import numpy as np
import scipy.ndimage
from PIL import Image


def recipe_quad(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """The recipe's quad ``[4, 2]`` (c−x−y, c−x+y, c+x+y, c+x−y) and ``qsize`` for 68 landmarks."""
    lm = np.asarray(landmarks, dtype=np.float64)
    eye_left = lm[36:42].mean(axis=0)
    eye_right = lm[42:48].mean(axis=0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    return quad, float(np.hypot(*x) * 2)


def recipe_align(photo: np.ndarray, landmarks: np.ndarray, output_size: int, transform_size: int = 4096,
                 enable_padding: bool = True) -> np.ndarray:
    """``[H, W, 3]`` uint8 photo → ``[output_size, output_size, 3]`` uint8, as FFHQ was made."""
    quad, qsize = recipe_quad(landmarks)
    img = Image.fromarray(photo)

    # Shrink.
    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:
        rsize = (int(np.rint(float(img.size[0]) / shrink)), int(np.rint(float(img.size[1]) / shrink)))
        img = img.resize(rsize, Image.Resampling.LANCZOS)
        quad /= shrink
        qsize /= shrink

    # Crop.
    border = max(int(np.rint(qsize * 0.1)), 3)
    crop = (int(np.floor(quad[:, 0].min())), int(np.floor(quad[:, 1].min())),
            int(np.ceil(quad[:, 0].max())), int(np.ceil(quad[:, 1].max())))
    crop = (max(crop[0] - border, 0), max(crop[1] - border, 0),
            min(crop[2] + border, img.size[0]), min(crop[3] + border, img.size[1]))
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad -= crop[0:2]

    # Pad.
    pad = (int(np.floor(quad[:, 0].min())), int(np.floor(quad[:, 1].min())),
           int(np.ceil(quad[:, 0].max())), int(np.ceil(quad[:, 1].max())))
    pad = (max(-pad[0] + border, 0), max(-pad[1] + border, 0),
           max(pad[2] - img.size[0] + border, 0), max(pad[3] - img.size[1] + border, 0))
    if enable_padding and max(pad) > border - 4:
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        arr = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
        h, w, _ = arr.shape
        y, x, _ = np.ogrid[:h, :w, :1]
        mask = np.maximum(1.0 - np.minimum(np.float32(x) / pad[0], np.float32(w - 1 - x) / pad[2]),
                          1.0 - np.minimum(np.float32(y) / pad[1], np.float32(h - 1 - y) / pad[3]))
        blur = qsize * 0.02
        arr += (scipy.ndimage.gaussian_filter(arr, [blur, blur, 0]) - arr) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
        arr += (np.median(arr, axis=(0, 1)) - arr) * np.clip(mask, 0.0, 1.0)
        img = Image.fromarray(np.uint8(np.clip(np.rint(arr), 0, 255)), "RGB")
        del arr, mask
        quad += pad[:2]

    # Transform.
    img = img.transform((transform_size, transform_size), Image.Transform.QUAD, tuple((quad + 0.5).flatten()),
                        Image.Resampling.BILINEAR)
    if output_size < transform_size:
        img = img.resize((output_size, output_size), Image.Resampling.LANCZOS)
    return np.asarray(img)


def face_at_scale(photo: np.ndarray, landmarks: np.ndarray, quad_multiple: float, output_size: int,
                  keep: float = 0.95, grain: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """``photo`` rescaled so the face's quad is ``quad_multiple × output_size`` pixels, and its landmarks.

    Only the part within ``keep`` quad sides of the quad's centre is kept (the recipe reads at most
    0.81 quad sides from it: half-diagonal plus border), so a 4× case at 1024² stays near 50 MP.
    Downscales with area averaging; upscales with Lanczos and then adds Gaussian grain of ``grain``
    grey levels (fixed seed), so an upscaled photo has pixel-level detail, as a photo taken at that
    resolution has (sensor noise, skin texture), for the resampling to alias or not.
    """
    quad, qsize = recipe_quad(landmarks)
    factor = quad_multiple * output_size / qsize
    centre = quad.mean(axis=0)
    height, width = photo.shape[:2]
    lo = np.maximum(np.floor(centre - keep * qsize).astype(int), 0)
    hi = np.minimum(np.ceil(centre + keep * qsize).astype(int), [width, height])
    part = photo[lo[1] : hi[1], lo[0] : hi[0]]
    size = (max(1, round(part.shape[1] * factor)), max(1, round(part.shape[0] * factor)))
    if factor > 1:
        scaled = cv2.resize(part, size, interpolation=cv2.INTER_LANCZOS4)
        rng = np.random.default_rng(0)
        for r0 in range(0, scaled.shape[0] if grain > 0 else 0, 256):  # in blocks: 50 MP of float64 noise is 1.2 GB
            block = scaled[r0 : r0 + 256]
            block[...] = np.clip(np.rint(block + rng.normal(0.0, grain, block.shape)), 0, 255)
    else:
        scaled = cv2.resize(part, size, interpolation=cv2.INTER_AREA)
    step = np.array([size[0] / part.shape[1], size[1] / part.shape[0]])
    return scaled, (landmarks - lo + 0.5) * step - 0.5


def _central(image: np.ndarray) -> np.ndarray:
    size = image.shape[0]
    return image[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4].astype(np.float64)


def central_mse(image: np.ndarray, reference: np.ndarray) -> float:
    """Mean squared difference over the central half (rows and columns S/4..3S/4) of two ``[S, S, 3]``
    aligned images, in 8-bit units²."""
    return float(np.mean((_central(image) - _central(reference)) ** 2))


def laplacian_energy(image: np.ndarray) -> float:
    """Mean squared 4-neighbour Laplacian over the central half of an ``[S, S, 3]`` image, all channels."""
    laplacian = cv2.Laplacian(image.astype(np.float64), cv2.CV_64F, ksize=1, borderType=cv2.BORDER_REFLECT)
    return float(np.mean(_central(laplacian) ** 2))
