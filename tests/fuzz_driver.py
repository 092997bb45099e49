"""The fuzz campaign's child process (run by test_fuzz.py under a memory limit).

Seeded and bounded: mutated sample images through ``io.read_image``, random
chain strings and inline kernels through the parsers, random kernel files and
catalogs through their readers.  An ``ImgconvError`` or ``ValueError`` (the
one-line refusals) is a correct answer; any other exception is a finding,
printed as ``FINDING <kind> <case>: <exception>``.  Exit 0 when there is none.
"""

import random
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
ACCEPTED = (ValueError,)  # with ImgconvError, added once imgconv is imported
SLOW_CASE_SECONDS = 20.0


def mutate(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        kind = rng.randrange(6)
        at = rng.randrange(max(1, len(data)))
        if kind == 0:  # flip bits
            data[at] ^= 1 << rng.randrange(8)
        elif kind == 1:  # truncate
            del data[at:]
        elif kind == 2:  # insert bytes
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif kind == 3:  # duplicate a run (chunks, markers)
            run = data[at : at + rng.randint(1, 64)]
            data[at:at] = run
        elif kind == 4:  # a large number where a size may be
            data[at : at + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x00\x00\x00", b"\x00\x01\x00\x00"])
        else:  # zero a run
            end = min(len(data), at + rng.randint(1, 32))
            data[at:end] = bytes(end - at)
        if not data:
            break
    return bytes(data)


def fix_png_crcs(data: bytes) -> bytes:
    """Recompute every PNG chunk's CRC, so a mutant gets past the checksum into the decoder."""
    import struct
    import zlib

    data = bytearray(data)
    at = 8
    while at + 12 <= len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        end = at + 8 + length
        if end + 4 > len(data):
            break
        data[end : end + 4] = struct.pack(">I", zlib.crc32(data[at + 4 : end]) & 0xFFFFFFFF)
        at = end + 4
    return bytes(data)


def random_text(rng: random.Random, alphabet: str, longest: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, longest)))


CHAIN_WORDS = ["blur", "sharpen", "gaussian", "sobel", "box", "motion-blur", "unsharp", "emboss", "nope", "sigma", "size",
               "radius", "angle", "normalize", "scale", "true", "2", "-1", "0.5", "1e3", "nan", "inf"]


def random_chain(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 8)):
        pick = rng.random()
        if pick < 0.5:
            parts.append(rng.choice(CHAIN_WORDS))
        elif pick < 0.8:
            parts.append(rng.choice(":,=[];@ ") * rng.randint(1, 3))
        else:
            parts.append(random_text(rng, "0123456789.-+eE [];,:x", 12))
    return "".join(parts)


def run(seed: int, count: int) -> int:
    import imgconv
    from imgconv import io
    from imgconv.chain import parse_chain
    from imgconv.errors import ImgconvError
    from imgconv.kernels import load_catalog, parse_inline_kernel, read_kernel_file

    accepted = ACCEPTED + (ImgconvError,)
    warnings.simplefilter("ignore")
    rng = random.Random(seed)
    catalog = load_catalog(use_env=False)
    findings = 0
    folder = Path(tempfile.mkdtemp(prefix="imgconv-fuzz-"))
    sources = sorted(p for p in SAMPLES.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".gif", ".webp"))
    originals = [(p.suffix, p.read_bytes()) for p in sources]

    def check(kind, case, action):
        nonlocal findings
        started = time.monotonic()
        try:
            action()
        except accepted as exc:
            if "\n" in str(exc):
                findings += 1
                print(f"FINDING {kind} {case!r}: a message of several lines: {str(exc)[:300]!r}")
        except Exception:  # noqa: BLE001 - a finding: report it and go on
            findings += 1
            print(f"FINDING {kind} {case!r}: {traceback.format_exc(limit=3)[-600:]}")
        if time.monotonic() - started > SLOW_CASE_SECONDS:
            findings += 1
            print(f"FINDING {kind} {case!r}: took {time.monotonic() - started:.1f} s")

    for number in range(count):
        suffix, data = rng.choice(originals)
        path = folder / f"mutant-{number}{suffix}"
        mutant = mutate(data, rng)
        if suffix == ".png" and rng.random() < 0.7:
            mutant = fix_png_crcs(mutant)
        path.write_bytes(mutant)
        check("image", path.name, lambda: io.read_image(path))
        path.unlink()
    for number in range(count):
        text = random_chain(rng)
        check("chain", text, lambda: parse_chain(text, catalog))
        kernel_text = random_text(rng, "0123456789 .-+eE/;,[]x:\n\t#", 40)
        check("inline", kernel_text, lambda: parse_inline_kernel(kernel_text))
    for number in range(count // 2):
        suffix = rng.choice([".txt", ".mat", ".csv", ".npy", ".kernel"])
        path = folder / f"kernel-{number}{suffix}"
        if suffix == ".npy" and rng.random() < 0.7:
            import numpy as np

            buffer = __import__("io").BytesIO()
            np.save(buffer, np.arange(rng.randint(1, 30), dtype=np.float64).reshape(1, -1))
            path.write_bytes(mutate(buffer.getvalue(), rng))
        else:
            path.write_bytes(random_text(rng, "0123456789 .-+eE/;,\n:x\"abc#", 200).encode())
        check("kernel-file", path.name, lambda: read_kernel_file(path))
        path.unlink()
    entries = ["description: x", "matrix: [[1, 2], [3, 4]]", "family: gaussian", "family: [gaussian]", "params: {sigma: 2}",
               "kernels: [{matrix: [[1]]}]", "combine: max", "out_range: abs", "aliases: [a, b]", "scale: 1e400",
               "bias: .inf", "matrix: [[]]", "matrix: [[1, 2], [3]]", "normalize: true", "params: [1, 2]", "version: 2"]
    for number in range(count // 2):
        lines = ["kernels:"] if rng.random() < 0.9 else [random_text(rng, "ab: [{}]\n", 20)]
        for entry in range(rng.randint(0, 3)):
            lines.append(f"  k{entry}:")
            lines.extend("    " + rng.choice(entries) for _ in range(rng.randint(0, 5)))
        path = folder / f"catalog-{number}.yaml"
        text = "\n".join(lines)
        if rng.random() < 0.3:
            text = mutate(text.encode(), rng).decode("latin-1")
        path.write_text(text, encoding="latin-1")
        check("catalog", text[:80], lambda: load_catalog([path], use_env=False))
        path.unlink()
    left = sorted(p.name for p in folder.iterdir())
    if left:
        findings += 1
        print(f"FINDING leftovers: {left[:10]}")
    folder.rmdir()
    print(f"fuzz: seed {seed}, {count} cases per kind, {findings} findings")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(run(int(sys.argv[1]), int(sys.argv[2])))
