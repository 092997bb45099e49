"""Findings of the review of the restructured engine and the faithful-files work."""

import numpy as np
import pytest

from imgconv import io

tifffile = pytest.importorskip("tifffile")


def test_tifffile_layout_descriptions_are_not_copied(tmp_path):
    source = tmp_path / "planar.tif"
    tifffile.imwrite(source, (np.arange(3 * 6 * 5).reshape(3, 6, 5) * 100).astype(np.uint16), photometric="rgb")
    image = io.read_image(source)
    assert image.pixels.shape == (6, 5, 3)
    out = tmp_path / "out.tif"
    io.write_image(out, image.pixels, like=image)
    with tifffile.TiffFile(out) as written:
        description = written.pages[0].description
        assert '"shape": [3' not in description
        np.testing.assert_array_equal(written.asarray(), image.pixels)


def test_a_real_description_is_kept(tmp_path):
    source = tmp_path / "described.tif"
    tifffile.imwrite(source, np.zeros((4, 5), np.uint16), description="Scan of plate 7", metadata=None)
    image = io.read_image(source)
    out = tmp_path / "out.tif"
    io.write_image(out, image.pixels, like=image)
    with tifffile.TiffFile(out) as written:
        assert written.pages[0].description == "Scan of plate 7"
