"""The background decoder of the next photo: same pixels, one decode, changed files re-read."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from petseg_desktop.prefetch import ImagePrefetcher
from models.images import ImageLoadError, load_rgb


class CountingDecoder:
    """The real load_rgb, counting its calls."""

    def __init__(self) -> None:
        self.calls: list[Path] = []

    def __call__(self, path: Path) -> np.ndarray:
        self.calls.append(Path(path))
        return load_rgb(path)


@pytest.fixture
def decoder():
    return CountingDecoder()


def test_prefetched_photo_is_decoded_once_and_identical(pet_photos, decoder) -> None:
    prefetcher = ImagePrefetcher(decoder)
    prefetcher.prefetch(pet_photos[0])
    prefetcher.prefetch(pet_photos[0])  # asking again starts nothing new
    rgb = prefetcher.load(pet_photos[0])
    assert np.array_equal(rgb, load_rgb(pet_photos[0]))
    assert decoder.calls == [pet_photos[0]]
    prefetcher.load(pet_photos[0])  # handed over once: a second load decodes again
    assert len(decoder.calls) == 2
    prefetcher.shutdown()


def test_another_photo_is_decoded_directly(pet_photos, decoder) -> None:
    prefetcher = ImagePrefetcher(decoder)
    prefetcher.prefetch(pet_photos[0])
    rgb = prefetcher.load(pet_photos[1])
    assert np.array_equal(rgb, load_rgb(pet_photos[1]))
    assert pet_photos[1] in decoder.calls
    prefetcher.shutdown()


def test_a_file_replaced_after_prefetch_is_read_again(pet_photos, decoder, tmp_path) -> None:
    path = tmp_path / "photo.jpg"
    shutil.copy(pet_photos[0], path)
    prefetcher = ImagePrefetcher(decoder)
    prefetcher.prefetch(path)
    prefetcher._future.result()  # let the decode finish before the file changes
    shutil.copy(pet_photos[1], path)
    assert np.array_equal(prefetcher.load(path), load_rgb(pet_photos[1]))
    prefetcher.shutdown()


def test_a_corrupt_prefetched_photo_raises_on_load(tmp_path, decoder) -> None:
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    prefetcher = ImagePrefetcher(decoder)
    prefetcher.prefetch(path)
    with pytest.raises(ImageLoadError, match="broken.jpg"):
        prefetcher.load(path)
    prefetcher.shutdown()


def test_load_waits_for_a_prefetch_still_queued_behind_another(pet_photos) -> None:
    import threading

    release = threading.Event()

    def slow_first(path: Path) -> np.ndarray:
        if Path(path) == pet_photos[0]:
            release.wait(10)
        return load_rgb(path)

    prefetcher = ImagePrefetcher(slow_first)
    prefetcher.prefetch(pet_photos[0])  # occupies the one decoder thread
    prefetcher.prefetch(pet_photos[1])  # queued behind it
    threading.Timer(0.2, release.set).start()
    assert np.array_equal(prefetcher.load(pet_photos[1]), load_rgb(pet_photos[1]))
    prefetcher.shutdown()
