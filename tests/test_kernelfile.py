"""Kernels typed on the command line and read from ImageMagick, libvips, CSV
and .npy files: parsed exactly, oriented and centred as the tools that write
them apply them (checked against those tools' own formulas), refused clearly."""

import numpy as np
import pytest

import imgconv
from imgconv.errors import CatalogError, KernelFileError
from imgconv.kernels import centre_on, load_kernel, looks_like_path, parse_inline_kernel, read_kernel_file


# ---------------------------------------------------------------------------
# references: how each tool applies its kernel, written out (periodic border,
# so that every tool and imgconv agree on the border too)


def imagemagick_convolve(image, kernel, origin):
    """ImageMagick's -morphology Convolve: out[y, x] = sum K[v, u] * in[y - v + oy, x - u + ox]."""
    oy, ox = origin
    out = np.zeros(image.shape)
    for (v, u), weight in np.ndenumerate(kernel):
        out += weight * np.roll(image, (v - oy, u - ox), axis=(0, 1))
    return out


def vips_conv(image, mask, scale=1.0, offset=0.0):
    """libvips conv: out[y, x] = sum M[v, u] * in[y + v - H//2, x + u - W//2] / scale + offset."""
    height, width = mask.shape
    out = np.zeros(image.shape)
    for (v, u), weight in np.ndenumerate(mask):
        out += weight * np.roll(image, (height // 2 - v, width // 2 - u), axis=(0, 1))
    return out / scale + offset


@pytest.fixture
def image(rng):
    return rng.random((23, 19)) * 100


# ---------------------------------------------------------------------------
# inline text


@pytest.mark.parametrize(
    "text",
    [
        "0 -1 0; -1 5 -1; 0 -1 0",
        "0,-1,0;-1,5,-1;0,-1,0",
        "0 -1 0\n-1 5 -1\n0 -1 0\n",
        "[0 -1 0; -1 5 -1; 0 -1 0]",
        "[[0, -1, 0], [-1, 5, -1], [0, -1, 0]]",
        "  0, -1, 0 ;  -1 , 5, -1;0 -1 0 ; ",
    ],
)
def test_inline_spellings_of_sharpen(text):
    loaded = parse_inline_kernel(text)
    np.testing.assert_array_equal(loaded.matrix, [[0, -1, 0], [-1, 5, -1], [0, -1, 0]])
    assert loaded.bias == 0 and loaded.format == "inline"


def test_inline_fractions_and_exponents():
    loaded = parse_inline_kernel("1/16 2/16 1/16; 2/16 4/16 2/16; 1/16 2/16 1/16")
    assert loaded.matrix.sum() == pytest.approx(1.0)
    assert parse_inline_kernel("1e-3 -2.5E2 .5").matrix.tolist() == [[0.001, -250.0, 0.5]]


@pytest.mark.parametrize(
    "text, message",
    [
        ("1 2; 3", "row 2 has 1 values, row 1 has 2"),
        ("1 x 3", "'x' is not a number"),
        ("", "no numbers found"),
        ("; ;", "no numbers found"),
        ("1/0", "divides by zero"),
        ("1 nan", "'nan' is not a number"),
        ("1e400", "not a finite number"),
        ("[[1, 2], [3]]", "row 2 has 1 values"),
        ("[[1, true]]", "is not a number"),
        ("[[1, 2]", "a nested list must look like"),
    ],
)
def test_bad_inline_kernels_are_usage_errors(text, message):
    with pytest.raises(CatalogError, match="kernel") as info:
        parse_inline_kernel(text)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_inline_size_limit():
    with pytest.raises(CatalogError, match="larger than the 1025x1025 limit"):
        parse_inline_kernel(" ".join(["1"] * 1026))


# ---------------------------------------------------------------------------
# ImageMagick


@pytest.mark.parametrize(
    "shape, origin",
    [((3, 3), None), ((4, 4), None), ((2, 5), None), ((3, 3), (0, 0)), ((3, 4), (2, 3)), ((5, 2), (1, 0)), ((1, 4), (0, 3))],
)
def test_imagemagick_kernels_match_imagemagick(rng, image, shape, origin):
    height, width = shape
    kernel = rng.integers(-5, 6, size=shape).astype(float)
    header = f"{width}x{height}" + (f"+{origin[1]}+{origin[0]}" if origin else "")
    text = header + ": " + ", ".join(f"{v:g}" for v in kernel.ravel())
    loaded = parse_inline_kernel(text)
    assert loaded.format == "ImageMagick"
    np.testing.assert_array_equal(loaded.written, kernel)
    effective = origin or ((height - 1) // 2, (width - 1) // 2)
    expected = imagemagick_convolve(image, kernel, effective)
    got = imgconv.convolve(image, loaded.matrix, mode="wrap")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)


def test_imagemagick_file_square_shorthand_and_excluded_elements(tmp_path):
    path = tmp_path / "cross.txt"
    path.write_text("3: nan,1,nan  1,1,1  -,1,-\n")
    loaded = read_kernel_file(path)
    np.testing.assert_array_equal(loaded.matrix, [[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    assert any("excluded" in note for note in loaded.notes)


@pytest.mark.parametrize(
    "text, message",
    [
        ("3x3: 1 2 3", "the header says 3x3 = 9 values, found 3"),
        ("3x3+3+0: 1 2 3 4 5 6 7 8 9", "origin +3+0 lies outside"),
        ("3x3@: 1 2 3 4 5 6 7 8 9", "rotation flags"),
        ("1x2: 1 2; 1x2: 3 4", "kernel list"),
        ("0x3:", "at least 1x1"),
    ],
)
def test_bad_imagemagick_kernels(text, message):
    with pytest.raises(CatalogError) as info:
        parse_inline_kernel(text)
    assert message in str(info.value)


# ---------------------------------------------------------------------------
# libvips


@pytest.mark.parametrize("shape", [(3, 3), (4, 4), (2, 5), (5, 2), (1, 3)])
def test_vips_matrices_match_vips(rng, image, tmp_path, shape):
    height, width = shape
    mask = rng.integers(-4, 5, size=shape).astype(float)
    scale, offset = 3.0, 20.0
    rows = "\n".join(" ".join(f"{v:g}" for v in row) for row in mask)
    path = tmp_path / "mask.mat"
    path.write_text(f"{width} {height} {scale:g} {offset:g}\n{rows}\n")
    loaded = read_kernel_file(path)
    assert loaded.format == "libvips .mat"
    np.testing.assert_array_equal(loaded.written, mask)
    assert loaded.bias == pytest.approx(offset / 255)
    expected = vips_conv(image, mask, scale, offset)
    # On an 8-bit scale (255 = full), the bias is the offset itself.
    got = imgconv.convolve(image, loaded.matrix, mode="wrap") + loaded.bias * 255
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)


def test_vips_header_without_scale_and_separators(tmp_path):
    path = tmp_path / "edge.mat"
    path.write_text('# a comment\n3, 1\n"1", 0, -1\n')
    loaded = read_kernel_file(path)
    np.testing.assert_array_equal(loaded.matrix, [[-1, 0, 1]])  # turned round
    assert loaded.bias == 0
    assert any("180 degrees" in note for note in loaded.notes)


def test_vips_offset_becomes_the_filters_bias(tmp_path):
    path = tmp_path / "emboss.mat"
    path.write_text("3 3 1 128\n-1 -1 0\n-1 0 1\n0 1 1\n")
    flt = read_kernel_file(path).to_filter()
    flat = np.full((8, 8), 90, np.uint8)
    assert (imgconv.apply_filter(flat, flt) == 128).all()


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "empty file"),
        ("3\n1 2 3\n", "the first line must be"),
        ("a b\n", "whole numbers"),
        ("0 1\n", "at least 1"),
        ("2 2 0\n1 2\n3 4\n", "scale must not be 0"),
        ("3 2\n1 2 3\n", "the header says 2 rows, found 1"),
        ("2 1\n1 2\n3 4\n", "line 3 is extra"),
        ("3 1\n1 2\n", "row 1 has 2 values, the header says width 3"),
        ("2 1\n1 z\n", "'z' is not a number"),
        ("2 1 x\n1 2\n", "'x' is not a number"),
    ],
)
def test_bad_vips_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.mat"
    path.write_text(content)
    with pytest.raises(KernelFileError) as info:
        read_kernel_file(path)
    text = str(info.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text


# ---------------------------------------------------------------------------
# CSV / text and .npy


def test_csv_and_whitespace_text(tmp_path):
    path = tmp_path / "k.csv"
    path.write_text("# Laplacian\n0,1,0\n1,-4,1\n\n0,1,0  # last row\n")
    loaded = read_kernel_file(path)
    np.testing.assert_array_equal(loaded.matrix, [[0, 1, 0], [1, -4, 1], [0, 1, 0]])
    assert loaded.format == "text"
    tabbed = tmp_path / "k.txt"
    tabbed.write_text("1\t2\n3\t4\n")
    np.testing.assert_array_equal(read_kernel_file(tabbed).matrix, [[1, 2], [3, 4]])


def test_npy(tmp_path, rng):
    kernel = rng.random((4, 6))
    np.save(tmp_path / "k.npy", kernel)
    loaded = read_kernel_file(tmp_path / "k.npy")
    np.testing.assert_array_equal(loaded.matrix, kernel)
    np.save(tmp_path / "row.npy", np.array([1, 2, 1], dtype=np.int16))
    np.testing.assert_array_equal(read_kernel_file(tmp_path / "row.npy").matrix, [[1, 2, 1]])


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((2, 2, 2)), "non-empty 2-D array"),
        (np.zeros((0, 3)), "non-empty 2-D array"),
        (np.array([[1.0, np.nan]]), "NaN or infinite"),
        (np.array([["a", "b"]]), "not real numbers"),
        (np.array([[1, None]], dtype=object), "not a plain .npy array"),
    ],
)
def test_bad_npy(tmp_path, array, message):
    path = tmp_path / "bad.npy"
    np.save(path, array, allow_pickle=True)
    with pytest.raises(KernelFileError) as info:
        read_kernel_file(path)
    assert message in str(info.value) and "bad.npy" in str(info.value)


def test_other_bad_files(tmp_path):
    binary = tmp_path / "k.txt"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(KernelFileError, match="not UTF-8"):
        read_kernel_file(binary)
    npy_named_wrong = tmp_path / "k.dat"
    np.save(tmp_path / "k2.npy", np.ones((2, 2)))
    npy_named_wrong.write_bytes((tmp_path / "k2.npy").read_bytes())
    with pytest.raises(KernelFileError, match="needs the .npy extension"):
        read_kernel_file(npy_named_wrong)
    with pytest.raises(KernelFileError, match="is a directory"):
        read_kernel_file(tmp_path)
    with pytest.raises(KernelFileError, match="cannot read"):
        read_kernel_file(tmp_path / "missing.csv")


# ---------------------------------------------------------------------------
# --kernel: a file when one exists, else inline text


def test_load_kernel_prefers_an_existing_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "k.csv").write_text("1 2 1\n")
    assert load_kernel("k.csv").format == "text"
    assert load_kernel("1 2 1").format == "inline"
    with pytest.raises(CatalogError, match="kernel file 'missing.mat' not found"):
        load_kernel("missing.mat")
    assert looks_like_path("dir/k") and looks_like_path("k.npy")
    assert not looks_like_path("1 2 3") and not looks_like_path("1;2") and not looks_like_path("3x3: 1 2 3")


@pytest.mark.parametrize("size, origin", [(3, 0), (3, 1), (3, 2), (4, 0), (4, 1), (4, 2), (4, 3), (1, 0), (2, 0), (2, 1)])
def test_centre_on_puts_the_origin_at_the_centre(size, origin):
    matrix = np.arange(1, size + 1, dtype=float)[None, :]
    padded = centre_on(matrix, (0, origin))
    assert padded[0, padded.shape[1] // 2] == origin + 1
    assert padded.sum() == matrix.sum() and padded.shape[1] < size * 2 + 2
