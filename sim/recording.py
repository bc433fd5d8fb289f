"""Headless recording of a run to GIF (Pillow) or MP4 (imageio-ffmpeg, the 'video' extra)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import RecordingError

__all__ = ["Recorder"]


class Recorder:
    """Collects RGB frames and writes them once, atomically, at the end."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path = Path(path)
        self.fps = fps
        suffix = self.path.suffix.lower()
        if suffix not in (".gif", ".mp4"):
            raise RecordingError(f"--record {path}: unknown format '{suffix}', use .gif or .mp4")
        if suffix == ".mp4":
            try:
                import imageio_ffmpeg  # noqa: F401
            except ImportError:
                raise RecordingError(
                    f"--record {path}: MP4 needs the 'video' extra "
                    "(pip install 'value-mpc[video]'); .gif works without it"
                ) from None
        self.frames: list[np.ndarray] = []

    def add(self, frame: np.ndarray) -> None:
        self.frames.append(frame)

    def save(self) -> Path:
        if not self.frames:
            raise RecordingError(f"--record {self.path}: no frames were captured")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=self.path.suffix)
        os.fchmod(fd, 0o644)
        os.close(fd)
        try:
            if self.path.suffix.lower() == ".gif":
                from PIL import Image

                images = [Image.fromarray(f) for f in self.frames]
                images[0].save(
                    tmp,
                    save_all=True,
                    append_images=images[1:],
                    loop=0,
                    duration=int(round(1000.0 / self.fps)),
                    optimize=False,
                )
            else:
                import imageio.v2 as imageio

                with imageio.get_writer(tmp, fps=self.fps, format="FFMPEG") as w:
                    for f in self.frames:
                        w.append_data(f)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return self.path
