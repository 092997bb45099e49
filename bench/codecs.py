"""Codec benchmark: 16-bit colour PNG and TIFF through each candidate library.

    python bench/codecs.py [--runs 3] [--size 6000x4000] [--e2e]

A 24-megapixel (6000x4000) 16-bit RGB image, made from samples/astronaut.png
(upscaled in float, to 16 bits, plus Gaussian noise of 64 levels: smooth areas
with noisy low bits, like a 16-bit export of a raw photograph), is decoded and
encoded as PNG and TIFF by every candidate that is installed:

- Pillow (for reference: it decodes and encodes these files at 8 bits only);
- tifffile (TIFF only; pure Python + numpy; with imagecodecs installed it
  uses imagecodecs' codecs for compressed strips);
- imagecodecs (``png_encode``/``png_decode``: libpng);
- pyvips (libvips, with the pyvips-binary wheel);
- OpenCV (``cv2.imread``/``cv2.imwrite``, BGR order converted).

PNG is encoded at zlib level 6 by all (Pillow's and libvips's default);
TIFF uncompressed (as imgconv writes TIFF), and decoded uncompressed, Deflate
and LZW (LZW and Deflate files written by tifffile with imagecodecs).  Each
time is the median of ``--runs`` interleaved runs, in process, files in the
page cache.  Every decode is checked to give back every value.

Then: the install size of each library (``du`` of its package folders) and
what metadata each writes into a 16-bit file and reads back from one (ICC,
EXIF, XMP, resolution, PNG text), probed on small files.

``--e2e``: whole commands on the same 24 MP files, decode + Gaussian sigma 2 +
encode, 16-bit in and out: ``imgconv apply`` against a Python script with
OpenCV and one with pyvips.
"""

import argparse
import importlib.util
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # OpenCV notes on unsupported metadata, not results

REPO = Path(__file__).resolve().parent.parent


def have(module):
    return importlib.util.find_spec(module) is not None


def make_image(width, height):
    from PIL import Image

    rng = np.random.default_rng(1)
    with Image.open(REPO / "samples" / "astronaut.png") as im:
        planes = [im.convert("RGB").getchannel(c).convert("F").resize((width, height), Image.BICUBIC) for c in range(3)]
    rgb = np.stack([np.asarray(p, dtype=np.float32) for p in planes], axis=-1) * 257.0
    rgb += rng.normal(0.0, 64.0, size=rgb.shape).astype(np.float32)
    return np.clip(np.rint(rgb), 0, 65535).astype(np.uint16)


# ---------------------------------------------------------------------------
# the candidates: decode(path) -> array, encode(array, path)


def pillow_codec():
    from PIL import Image

    def decode(path):
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB")).astype(np.uint16) * 257  # 8 bits: not exact

    def encode_png(array, path):
        Image.fromarray(((array.astype(np.uint32) + 128) // 257).astype(np.uint8)).save(path, compress_level=6)

    def encode_tiff(array, path):
        Image.fromarray(((array.astype(np.uint32) + 128) // 257).astype(np.uint8)).save(path)

    return {"png decode": decode, "png encode": encode_png, "tiff decode": decode, "tiff encode": encode_tiff}


def tifffile_codec():
    import tifffile

    def encode(array, path):
        tifffile.imwrite(path, array, photometric="rgb")

    return {"tiff decode": tifffile.imread, "tiff encode": encode}


def imagecodecs_codec():
    import imagecodecs

    def decode(path):
        return imagecodecs.png_decode(Path(path).read_bytes())

    def encode(array, path):
        Path(path).write_bytes(imagecodecs.png_encode(array, level=6))

    return {"png decode": decode, "png encode": encode}


def pyvips_codec():
    import pyvips

    def decode(path):
        return pyvips.Image.new_from_file(str(path), access="sequential", fail=True).numpy()

    def encode_png(array, path):
        # all row filters (adaptive, as libpng and Pillow choose by default); libvips's own default is none
        pyvips.Image.new_from_array(array, interpretation="rgb16").pngsave(str(path), compression=6, filter="all")

    def encode_png_unfiltered(array, path):
        pyvips.Image.new_from_array(array, interpretation="rgb16").pngsave(str(path), compression=6, filter="none")

    def encode_tiff(array, path):
        pyvips.Image.new_from_array(array, interpretation="rgb16").tiffsave(str(path))

    return {
        "png decode": decode,
        "png encode": encode_png,
        "png encode, filter none": encode_png_unfiltered,
        "tiff decode": decode,
        "tiff encode": encode_tiff,
    }


def opencv_codec():
    import cv2

    def decode(path):
        return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)

    def encode_png(array, path):
        cv2.imwrite(str(path), cv2.cvtColor(array, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 6])

    def encode_tiff(array, path):
        cv2.imwrite(str(path), cv2.cvtColor(array, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_TIFF_COMPRESSION, 1])

    return {"png decode": decode, "png encode": encode_png, "tiff decode": decode, "tiff encode": encode_tiff}


CANDIDATES = {
    "Pillow (8-bit only)": ("PIL", pillow_codec),
    "tifffile": ("tifffile", tifffile_codec),
    "imagecodecs": ("imagecodecs", imagecodecs_codec),
    "pyvips": ("pyvips", pyvips_codec),
    "OpenCV": ("cv2", opencv_codec),
}

# The folders each library installs into site-packages (for `du`).
PACKAGE_DIRS = {
    "Pillow (8-bit only)": ["PIL", "pillow.libs"],
    "tifffile": ["tifffile"],
    "imagecodecs": ["imagecodecs", "imagecodecs.libs"],
    "pyvips": ["pyvips", "_libvips.abi3.so", "pyvips_binary.libs", "cffi", "_cffi_backend*", "cffi.libs", "pycparser"],
    "OpenCV": ["cv2", "opencv_python_headless.libs"],
}


def install_size(name):
    import site

    site_dir = Path(next(p for p in site.getsitepackages() if p.endswith("site-packages")))
    paths = [str(p) for pattern in PACKAGE_DIRS[name] for p in site_dir.glob(pattern)]
    if not paths:
        return None
    out = subprocess.run(["du", "-sck", *paths], capture_output=True, text=True, check=True).stdout
    return int(out.strip().splitlines()[-1].split()[0]) / 1024


# ---------------------------------------------------------------------------
# metadata probe: what each library writes into a 16-bit file and reads back


def probe_metadata(name, work):
    """{("write"|"read", "PNG"|"TIFF"): set of what survived} for one candidate."""
    from PIL import Image, ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "probe-make"
    exif_bytes = b"Exif\x00\x00" + exif.tobytes()[6:] if exif.tobytes().startswith(b"Exif") else b"Exif\x00\x00" + exif.tobytes()
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/>probe-xmp</x:xmpmeta>'
    array = np.arange(48 * 32 * 3, dtype=np.uint16).reshape(32, 48, 3) * 37
    found = {}

    def seen_by_pillow(path):
        # an independent reader for the header and metadata (Pillow reads these files' headers fully)
        got = set()
        with Image.open(path) as im:
            info = im.info
            got |= {"ICC"} if info.get("icc_profile") == icc else set()
            got |= {"EXIF"} if im.getexif().get(0x010F) == "probe-make" else set()
            xml = info.get("xmp") or info.get("XML:com.adobe.xmp") or b""
            got |= {"XMP"} if b"probe-xmp" in (xml.encode() if isinstance(xml, str) else xml) else set()
            dpi = info.get("dpi")
            got |= {"dpi"} if dpi and abs(dpi[0] - 300) < 0.1 else set()
            got |= {"text"} if info.get("Author") == "probe" else set()
        return got

    def reference_file(fmt):
        """A 16-bit file holding all five, written without the candidate."""
        path = work / f"meta-ref.{fmt.lower()}"
        if fmt == "PNG":
            import struct
            import zlib

            def chunk(kind, data):
                return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

            raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in array)
            ppm = round(300 / 0.0254)
            body = chunk(b"IHDR", struct.pack(">IIBBBBB", 48, 32, 16, 2, 0, 0, 0))
            body += chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(icc))
            body += chunk(b"pHYs", struct.pack(">IIB", ppm, ppm, 1))
            body += chunk(b"eXIf", exif_bytes[6:])
            body += chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + xmp)
            body += chunk(b"tEXt", b"Author\x00probe")
            body += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
            path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
        else:
            import tifffile

            tifffile.imwrite(
                path, array, photometric="rgb", iccprofile=icc, resolution=(300, 300), resolutionunit="INCH",
                extratags=[(700, 1, len(xmp), xmp, True), (0x010F, 2, 0, "probe-make", True)],
            )
        return path

    module, make = CANDIDATES[name]
    codec = make()
    for fmt in ("PNG", "TIFF"):
        if f"{fmt.lower()} decode" not in codec:
            continue
        path = work / f"meta-{fmt.lower()}"
        got_write, got_read = set(), set()
        try:
            if module == "PIL":
                from PIL.PngImagePlugin import PngInfo

                info = PngInfo()
                info.add_itxt("XML:com.adobe.xmp", xmp)
                info.add_text("Author", "probe")
                extra = {"pnginfo": info} if fmt == "PNG" else {"exif": _tiff_tags_with_xmp(exif, xmp)}
                Image.fromarray((array >> 8).astype(np.uint8)).save(
                    path, format=fmt, icc_profile=icc, dpi=(300, 300), **({"exif": exif_bytes} if fmt == "PNG" else {}), **extra
                )
                got_write = seen_by_pillow(path)
                got_read = seen_by_pillow(reference_file(fmt))
            elif module == "tifffile":
                import tifffile

                tifffile.imwrite(path, array, photometric="rgb", iccprofile=icc, resolution=(300, 300), resolutionunit="INCH",
                                 extratags=[(700, 1, len(xmp), xmp, True), (0x010F, 2, 0, "probe-make", True)])
                got_write = seen_by_pillow(path)
                with tifffile.TiffFile(reference_file(fmt)) as tif:
                    tags = tif.pages[0].tags
                    got_read = {"ICC"} if "InterColorProfile" in tags else set()
                    got_read |= {"XMP"} if "XMP" in tags else set()
                    got_read |= {"dpi"} if "XResolution" in tags else set()
                    got_read |= {"EXIF"} if "Make" in tags else set()  # IFD0 tags; the EXIF IFD is read as a dict
            elif module == "imagecodecs":
                import imagecodecs

                path.write_bytes(imagecodecs.png_encode(array))
                got_write = seen_by_pillow(path)  # png_encode has no metadata arguments
                got_read = set()  # png_decode returns the pixels only
            elif module == "pyvips":
                import pyvips

                image = pyvips.Image.new_from_array(array, interpretation="rgb16").copy(xres=300 / 25.4, yres=300 / 25.4)
                image.set_type(pyvips.GValue.blob_type, "icc-profile-data", icc)
                image.set_type(pyvips.GValue.blob_type, "exif-data", exif_bytes)
                image.set_type(pyvips.GValue.blob_type, "xmp-data", xmp)
                image.set_type(pyvips.GValue.gstr_type, "png-comment-0-Author", "probe")
                image.write_to_file(str(path) + "." + fmt.lower())
                got_write = seen_by_pillow(str(path) + "." + fmt.lower())
                read = pyvips.Image.new_from_file(str(reference_file(fmt)))
                fields = set(read.get_fields())
                got_read = {label for label, field in (("ICC", "icc-profile-data"), ("EXIF", "exif-data"), ("XMP", "xmp-data")) if field in fields}
                got_read |= {"dpi"} if abs(read.xres * 25.4 - 300) < 0.1 else set()
                got_read |= {"text"} if any(f.startswith("png-comment") for f in fields) else set()
            elif module == "cv2":
                import cv2

                bgr = np.ascontiguousarray(array[..., ::-1])
                kinds = [cv2.IMAGE_METADATA_EXIF, cv2.IMAGE_METADATA_XMP, cv2.IMAGE_METADATA_ICCP]
                blobs = [np.frombuffer(exif_bytes[6:], np.uint8), np.frombuffer(xmp, np.uint8), np.frombuffer(icc, np.uint8)]
                ok = cv2.imwriteWithMetadata(str(path) + "." + fmt.lower(), bgr, kinds, blobs)
                got_write = seen_by_pillow(str(path) + "." + fmt.lower()) if ok else set()
                _, types, blobs = cv2.imreadWithMetadata(str(reference_file(fmt)), cv2.IMREAD_UNCHANGED)
                names = {cv2.IMAGE_METADATA_EXIF: "EXIF", cv2.IMAGE_METADATA_XMP: "XMP", cv2.IMAGE_METADATA_ICCP: "ICC"}
                got_read = {names[t] for t in (types if types is not None else []) if t in names}
        except Exception as exc:  # a probe, not the product: say what failed
            got_write = got_write or {f"error: {type(exc).__name__}"}
        found[("write", fmt)] = got_write
        found[("read", fmt)] = got_read
    return found


def _tiff_tags_with_xmp(exif, xmp):
    from PIL import Image

    tags = Image.Exif()
    tags[0x010F] = exif[0x010F]
    tags[700] = xmp
    return tags


# ---------------------------------------------------------------------------
# timing


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def codec_table(array, runs, work):
    codecs = {name: make() for name, (module, make) in CANDIDATES.items() if have(module)}
    sources = {}
    # the files every decoder reads: written by one writer each (not the one timed)
    import tifffile

    sources["PNG"] = work / "src.png"
    if "imagecodecs" in codecs:
        codecs["imagecodecs"]["png encode"](array, sources["PNG"])
    else:
        codecs["OpenCV"]["png encode"](array, sources["PNG"])
    sources["TIFF"] = work / "src.tif"
    tifffile.imwrite(sources["TIFF"], array, photometric="rgb")
    if have("imagecodecs"):
        sources["TIFF deflate"] = work / "src-deflate.tif"
        tifffile.imwrite(sources["TIFF deflate"], array, photometric="rgb", compression="zlib", predictor=True)
        sources["TIFF LZW"] = work / "src-lzw.tif"
        tifffile.imwrite(sources["TIFF LZW"], array, photometric="rgb", compression="lzw", predictor=True)

    jobs = []
    for name, codec in codecs.items():
        if "png decode" in codec:
            jobs.append((name, "PNG decode", codec["png decode"], (sources["PNG"],)))
            jobs.append((name, "PNG encode", codec["png encode"], (array, work / f"out-{len(jobs)}.png")))
            if "png encode, filter none" in codec:
                jobs.append((name, "PNG encode, filter none", codec["png encode, filter none"], (array, work / f"out-{len(jobs)}.png")))
        if "tiff decode" in codec:
            for label in ("TIFF", "TIFF deflate", "TIFF LZW"):
                if label in sources:
                    jobs.append((name, f"{label} decode", codec["tiff decode"], (sources[label],)))
            jobs.append((name, "TIFF encode", codec["tiff encode"], (array, work / f"out-{len(jobs)}.tif")))

    samples = {(name, what): [] for name, what, _, _ in jobs}
    exact = {}
    sizes = {}
    for _ in range(runs):
        for name, what, function, args in jobs:
            try:
                seconds, result = timed(function, *args)
            except Exception as exc:  # a library that cannot do it: recorded, not fatal
                samples[(name, what)].append(None)
                exact[(name, what)] = f"fails ({type(exc).__name__})"
                continue
            samples[(name, what)].append(seconds)
            if what.endswith("decode"):
                exact[(name, what)] = "yes" if (result.shape == array.shape and np.array_equal(result, array)) else "no"
            else:
                sizes[(name, what)] = os.path.getsize(args[1])
                exact[(name, what)] = "yes" if name != "Pillow (8-bit only)" else "no (8 bits)"
    print(f"# {array.shape[1]}x{array.shape[0]} 16-bit RGB ({array.nbytes / 2**20:.0f} MiB of pixels), median of {runs} runs")
    print()
    print("| library | operation | seconds | exact | file MiB |")
    print("| --- | --- | ---: | --- | ---: |")
    for (name, what), values in samples.items():
        good = [v for v in values if v is not None]
        seconds = f"{statistics.median(good):.2f}" if good else "-"
        size = f"{sizes[(name, what)] / 2**20:.0f}" if (name, what) in sizes else ""
        print(f"| {name} | {what} | {seconds} | {exact.get((name, what), '')} | {size} |")
    print()
    sys.stdout.flush()


def metadata_table(work):
    print("| library | install MiB | PNG: writes | PNG: reads | TIFF: writes | TIFF: reads |")
    print("| --- | ---: | --- | --- | --- | --- |")
    for name, (module, _) in CANDIDATES.items():
        if not have(module):
            print(f"| {name} | not installed | | | | |")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = probe_metadata(name, work)
        size = install_size(name)

        def cell(key):
            if key not in found:
                return "-"
            return ", ".join(sorted(found[key])) or "none"

        shown = f"{size:.0f}" if size is not None else "?"
        print(f"| {name} | {shown} | {cell(('write', 'PNG'))} | {cell(('read', 'PNG'))} | {cell(('write', 'TIFF'))} | {cell(('read', 'TIFF'))} |")
    print()
    sys.stdout.flush()


# ---------------------------------------------------------------------------
# whole commands

# (OpenCV's channel order, BGR, changes nothing here: every channel gets the same blur.)
OPENCV_GAUSS16 = """
import sys, cv2
img = cv2.imread(sys.argv[1], cv2.IMREAD_UNCHANGED)
out = cv2.GaussianBlur(img, (17, 17), 2.0, borderType=cv2.BORDER_REFLECT)
cv2.imwrite(sys.argv[2], out, [cv2.IMWRITE_PNG_COMPRESSION, 6, cv2.IMWRITE_TIFF_COMPRESSION, 1])
"""
PYVIPS_GAUSS16 = """
import sys, pyvips
img = pyvips.Image.new_from_file(sys.argv[1], access="sequential", fail=True)
out = img.gaussblur(2, precision="float", min_ampl=0.001).cast(img.format)
options = {"compression": 6, "filter": "all"} if sys.argv[2].endswith(".png") else {}
out.write_to_file(sys.argv[2], **options)
"""


def run_command(command):
    timed_command = ["/usr/bin/time", "-v"] + command
    result = subprocess.run(timed_command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr[-500:]}")
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", result.stderr)
    seconds = int(wall.group(1) or 0) * 3600 + int(wall.group(2)) * 60 + float(wall.group(3))
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    return seconds, peak_kb / 1024


def e2e_table(array, runs, work):
    import tifffile

    imgconv = shutil.which("imgconv") or str(Path(sys.executable).parent / "imgconv")
    (work / "cv_gauss16.py").write_text(OPENCV_GAUSS16)
    (work / "vips_gauss16.py").write_text(PYVIPS_GAUSS16)
    inputs = {"TIFF": work / "e2e.tif", "PNG": work / "e2e.png"}
    tifffile.imwrite(inputs["TIFF"], array, photometric="rgb")
    if have("imagecodecs"):
        import imagecodecs

        inputs["PNG"].write_bytes(imagecodecs.png_encode(array, level=6))
    else:
        import cv2

        cv2.imwrite(str(inputs["PNG"]), np.ascontiguousarray(array[..., ::-1]))
    print(f"# decode + Gaussian sigma 2 + encode, {array.shape[1]}x{array.shape[0]} 16-bit RGB, median of {runs} runs, peak RSS")
    print()
    print("| file | command | seconds | peak MiB |")
    print("| --- | --- | ---: | ---: |")
    for fmt, source in inputs.items():
        out = str(work / f"e2e-out.{source.suffix[1:]}")
        commands = {"imgconv apply gaussian -p sigma=2": [imgconv, "apply", "gaussian", "-p", "sigma=2", str(source), out]}
        if have("cv2"):
            commands["Python + OpenCV (GaussianBlur 17x17)"] = [sys.executable, str(work / "cv_gauss16.py"), str(source), out]
        if have("pyvips"):
            commands["Python + pyvips (gaussblur, float)"] = [sys.executable, str(work / "vips_gauss16.py"), str(source), out]
        for command in commands.values():
            run_command(command)  # warm: page cache, numba cache
        samples = {name: [run_command(command) for _ in range(1)] for name, command in commands.items()}
        for _ in range(runs - 1):
            for name, command in commands.items():
                samples[name].append(run_command(command))
        for name, values in samples.items():
            print(f"| {fmt} | {name} | {statistics.median(t for t, _ in values):.2f} | {max(m for _, m in values):.0f} |")
        sys.stdout.flush()
    print()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", default="6000x4000", help="WIDTHxHEIGHT")
    parser.add_argument("--e2e", action="store_true", help="also time whole commands (decode + filter + encode)")
    parser.add_argument("--only-e2e", action="store_true", help="only the whole commands")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    work = Path(tempfile.mkdtemp(prefix="imgconv-codecs-"))
    try:
        array = make_image(width, height)
        if not args.only_e2e:
            codec_table(array, args.runs, work)
            metadata_table(work)
        if args.e2e or args.only_e2e:
            e2e_table(array, args.runs, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
