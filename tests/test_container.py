"""The .ncf container round-trips, and every malformed input raises BitstreamError (nothing else)."""

from __future__ import annotations

import json
import os
import struct
import tracemalloc
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neuralcodec import BitstreamError
from neuralcodec.entropy.container import (
    FORMAT_VERSION,
    HEADER_DICTIONARY,
    MAGIC,
    MAX_HEADER_BYTES,
    Container,
    peek,
    read_container,
    write_container,
)

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies ------------------------------------------------------------------------------

_name_chars = st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
section_names = st.text(_name_chars, min_size=1, max_size=64)
json_leaf = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
json_values = st.recursive(
    json_leaf,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
containers = st.builds(
    Container,
    codec=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40),
    weights_hash=st.text(st.sampled_from("0123456789abcdef"), max_size=64),
    modality=st.sampled_from(["image", "audio", "video", "tokens", "x-ray_2"]),
    shape=st.lists(st.integers(1, 1024), max_size=4).map(tuple),  # product <= 2**40
    metadata=st.dictionaries(st.text(max_size=12), json_values, max_size=5),
    sections=st.dictionaries(section_names, st.binary(max_size=300), max_size=6),
)


def _example() -> Container:
    return Container(
        codec="walloc-image-16x",
        weights_hash="0123456789abcdef",
        modality="image",
        shape=(3, 64, 96),
        metadata={"bit_depth": 8, "mode": "lossy", "gain": 1.5, "tags": ["a", None, True]},
        sections={"latent": bytes(range(200)), "escapes": b"", "side": b"\x00\xff" * 9},
    )


def _deflate(text: bytes) -> bytes:
    d = zlib.compressobj(9, zlib.DEFLATED, -15, zdict=HEADER_DICTIONARY)
    return d.compress(text) + d.flush()


def _raw(header: dict | bytes, payload: bytes = b"", version: int = FORMAT_VERSION, deflated: bytes | None = None
         ) -> bytes:
    """Build a file by hand (valid CRC) so header validation itself is tested.

    The header JSON (or bytes) is deflated with the format's dictionary from version 2 on;
    ``deflated`` gives the header field's bytes directly."""
    hb = header if isinstance(header, bytes) else json.dumps(header).encode()
    if deflated is not None:
        hb = deflated
    elif version >= 2:
        hb = _deflate(hb)
    body = MAGIC + struct.pack("<HI", version, len(hb)) + hb + payload
    return body + struct.pack("<I", zlib.crc32(body))


def _good_header() -> dict:
    return {"codec": "c", "weights_hash": "ab", "modality": "image", "shape": [1, 2], "metadata": {}, "sections": [["s", 3]]}


# -- round trips -----------------------------------------------------------------------------


@FAST
@given(containers)
def test_random_containers_round_trip(c):
    blob = c.to_bytes()
    back = Container.from_bytes(blob)
    assert back == c
    assert list(back.sections) == list(c.sections)  # order kept
    info = peek(blob)
    assert info["crc_ok"] and info["total_bytes"] == len(blob)
    assert info["sections"] == {k: len(v) for k, v in c.sections.items()}


def test_file_round_trip_and_atomic_write(tmp_path):
    c = _example()
    path = tmp_path / "a.ncf"
    write_container(path, c)
    assert read_container(path) == c
    assert peek(path)["codec"] == "walloc-image-16x"
    assert os.listdir(tmp_path) == ["a.ncf"]  # no temp file left behind
    # A container that cannot be written leaves the old file untouched and no temp file.
    bad = Container("walloc-image-16x", "zz-not-hex", "image", (3,))
    with pytest.raises(ValueError, match="weights_hash"):
        write_container(path, bad)
    assert read_container(path) == c
    assert os.listdir(tmp_path) == ["a.ncf"]


def test_writer_rejects_what_the_reader_would_reject():
    base = dict(codec="c", weights_hash="", modality="image", shape=(1,))
    for kwargs in (
        {"codec": ""},
        {"codec": "has space"},
        {"modality": "Image"},
        {"shape": (0, 3)},
        {"shape": (2**21, 2**20)},
        {"shape": (1,) * 9},
        {"metadata": {"x": float("nan")}},
        {"metadata": {"x": (1, 2)}},
        {"metadata": {1: "int key"}},
        {"sections": {"bad name": b""}},
        {"sections": {"x" * 65: b""}},
        {"sections": {"s": "not bytes"}},
        {"sections": {f"s{i}": b"" for i in range(257)}},
    ):
        with pytest.raises(ValueError) as info:
            Container(**{**base, **kwargs}).to_bytes()
        assert not isinstance(info.value, BitstreamError)


# -- malformed input -------------------------------------------------------------------------


def test_every_truncation_raises():
    blob = _example().to_bytes()
    for n in range(len(blob)):
        with pytest.raises(BitstreamError):
            Container.from_bytes(blob[:n])
    with pytest.raises(BitstreamError):
        Container.from_bytes(blob + b"\x00")  # trailing bytes


@FAST
@given(containers, st.data())
def test_any_single_byte_change_raises(c, data):
    blob = bytearray(c.to_bytes())
    pos = data.draw(st.integers(0, len(blob) - 1))
    delta = data.draw(st.integers(1, 255))
    blob[pos] ^= delta  # CRC32 detects every error within one byte (bursts up to 32 bits)
    with pytest.raises(BitstreamError):
        Container.from_bytes(bytes(blob))


@FAST
@given(containers, st.data())
def test_random_multi_byte_corruption_never_crashes(c, data):
    blob = bytearray(c.to_bytes())
    for _ in range(data.draw(st.integers(2, 8))):
        pos = data.draw(st.integers(0, len(blob) - 1))
        blob[pos] = data.draw(st.integers(0, 255))
    try:
        back = Container.from_bytes(bytes(blob))
    except BitstreamError:
        return
    assert bytes(blob) == c.to_bytes() or isinstance(back, Container)  # passed CRC: still a valid container


@FAST
@given(st.binary(max_size=2000))
def test_random_garbage_raises(blob):
    with pytest.raises(BitstreamError):
        Container.from_bytes(blob)
    with pytest.raises(BitstreamError):
        Container.from_bytes(MAGIC + blob)
    with pytest.raises(BitstreamError):
        Container.from_bytes(MAGIC + struct.pack("<H", FORMAT_VERSION) + blob)


@FAST
@given(st.binary(max_size=400))
def test_garbage_header_with_valid_crc_raises(header):
    with pytest.raises(BitstreamError):
        Container.from_bytes(_raw(header))


@FAST
@given(json_values)
def test_wrong_json_header_types_raise(value):
    for key in ("codec", "weights_hash", "modality", "shape", "metadata", "sections"):
        h = _good_header()
        h[key] = value
        blob = _raw(h, b"abc")
        try:
            back = Container.from_bytes(blob)
        except BitstreamError:
            continue
        # A value the reader accepts must be one the writer accepts too (same rules both ways).
        assert Container.from_bytes(back.to_bytes()) == back


@pytest.mark.parametrize(
    "header",
    [
        {**_good_header(), "extra": 1},
        {k: v for k, v in _good_header().items() if k != "metadata"},
        {**_good_header(), "shape": [True, 2]},
        {**_good_header(), "shape": [2, -1]},
        {**_good_header(), "shape": [2**41]},
        {**_good_header(), "shape": "12"},
        {**_good_header(), "sections": [["s", 2], ["t", 1]]},  # right total, wrong split is fine; see below
        {**_good_header(), "sections": [["s", 3], ["s", 0]]},
        {**_good_header(), "sections": [["s", 3.0]]},
        {**_good_header(), "sections": [["s", 4]]},
        {**_good_header(), "sections": [["s", 2]]},
        {**_good_header(), "sections": [["s", -1], ["t", 4]]},
        {**_good_header(), "sections": [["é", 3]]},
        {**_good_header(), "sections": [{"name": "s", "length": 3}]},
        {**_good_header(), "metadata": []},
        {**_good_header(), "metadata": {"deep": json.loads("[" * 20 + "1" + "]" * 20)}},
        [1, 2, 3],
    ],
)
def test_invalid_headers_raise(header):
    blob = _raw(header, b"abc")
    if header == {**_good_header(), "sections": [["s", 2], ["t", 1]]}:
        assert Container.from_bytes(blob).sections == {"s": b"ab", "t": b"c"}
        return
    with pytest.raises(BitstreamError):
        Container.from_bytes(blob)


@pytest.mark.parametrize(
    "raw_json",
    [
        b'{"codec": NaN}',
        b'{"a": 1, "a": 2}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"x": ' + b"9" * 5000 + b"}",
        b"\xff\xfe{}",
        b"{}",
    ],
)
def test_nasty_json_raises(raw_json):
    with pytest.raises(BitstreamError):
        Container.from_bytes(_raw(raw_json))


def test_newer_version_is_reported():
    blob = _raw(_good_header(), b"abc", version=FORMAT_VERSION + 1)
    with pytest.raises(BitstreamError, match="newer neuralcodec"):
        Container.from_bytes(blob)
    with pytest.raises(BitstreamError, match="version"):
        Container.from_bytes(_raw(_good_header(), b"abc", version=0))


def test_huge_claimed_lengths_do_not_allocate():
    huge_header = MAGIC + struct.pack("<HI", FORMAT_VERSION, 0xFFFFFFFF) + b"{}" + b"\0" * 4
    huge_section = _raw({**_good_header(), "sections": [["s", 2**47]]}, b"abc")
    tracemalloc.start()
    try:
        for blob in (huge_header, huge_section):
            with pytest.raises(BitstreamError):
                Container.from_bytes(blob)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_read_container_errors_name_the_path(tmp_path):
    png = tmp_path / "picture.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(BitstreamError, match="picture.png.*not an .ncf"):
        read_container(png)
    with pytest.raises(BitstreamError, match="picture.png"):
        peek(png)
    empty = tmp_path / "empty.ncf"
    empty.write_bytes(b"")
    with pytest.raises(BitstreamError, match="empty.ncf"):
        read_container(empty)
    with pytest.raises(FileNotFoundError):
        read_container(tmp_path / "missing.ncf")


def test_peek_reports_damage_without_raising():
    blob = bytearray(_example().to_bytes())
    blob[-10] ^= 1  # inside a section: header still parses
    info = peek(bytes(blob))
    assert info["crc_ok"] is False
    assert info["sections"]["latent"] == 200
    with pytest.raises(BitstreamError, match="CRC"):
        Container.from_bytes(bytes(blob))


# -- format version 2: the deflated header ----------------------------------------------------


def test_version_1_files_still_read():
    header = {**_good_header(), "metadata": {"walloc": {"mode": "RGB"}}}
    c = Container.from_bytes(_raw(header, b"abc", version=1))
    assert c.sections == {"s": b"abc"} and c.metadata == header["metadata"]
    assert peek(_raw(header, b"abc", version=1))["format_version"] == 1


def test_written_header_is_deflated_json_and_smaller():
    c = _example()
    blob = c.to_bytes()
    version, length = struct.unpack("<HI", blob[4:10])
    assert version == FORMAT_VERSION == 2 and peek(blob)["format_version"] == 2
    text = zlib.decompressobj(-15, zdict=HEADER_DICTIONARY).decompress(blob[10 : 10 + length])
    assert json.loads(text)["codec"] == c.codec
    assert length < len(text) / 2


@pytest.mark.parametrize("case", ["truncated", "trailing", "garbage", "bomb"])
def test_bad_deflated_headers_raise(case):
    good = _deflate(json.dumps(_good_header()).encode())
    deflated = {
        "truncated": good[:-3],
        "trailing": good + b"\x00junk",
        "garbage": bytes(range(7, 250, 3)),
        "bomb": _deflate(b'{"codec":"' + b"a" * (MAX_HEADER_BYTES + 10) + b'"}'),
    }[case]
    tracemalloc.start()
    try:
        with pytest.raises(BitstreamError, match="header"):
            Container.from_bytes(_raw(_good_header(), b"abc", deflated=deflated))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MAX_HEADER_BYTES  # the inflate is bounded
