"""A SEAL ciphertext's coefficient data as one NumPy array, fast.

TenSEAL's binding reads coefficients one at a time (about 0.5 us each: 100 ms for 1e5 parameters). SEAL's
own serialization holds them contiguously, so this module serializes a ciphertext the caller already holds
as a validated SEAL object, decompresses it (none, zlib from the standard library, or Zstandard through the
system's libzstd) and parses SEAL's documented layout strictly: SEALHeader, parms id, NTT flag, size, degree,
modulus count, scale, correction factor, then the data array with its own header. Only our own serialization
of an object is parsed, so the values are those of the object that is added or decrypted; every layout field
is checked against the object, and anything unexpected (or no libzstd) falls back to the per-coefficient
accessor. It also writes that layout (uncompressed) for a ciphertext given as arrays, which SEAL's loader then
validates, and reads a plaintext's coefficients the same way.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import struct
import zlib

import numpy as np
import tenseal.sealapi as seal

from secagg.ckks import seal_io

_HEADER = struct.Struct("<HBBBBHQ")  # magic, header size, major, minor, compr mode, reserved, total size
_MEMBERS = struct.Struct("<4QBQQQdQ")  # parms id, NTT flag, size, degree, modulus count, scale, correction
_MAGIC = 0xA15E


def _load_zstd():  # type: ignore[no-untyped-def]
    name = ctypes.util.find_library("zstd")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        lib.ZSTD_decompress.restype = ctypes.c_size_t
        lib.ZSTD_decompress.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
        lib.ZSTD_isError.restype = ctypes.c_uint
        lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
        lib.ZSTD_findFrameCompressedSize.restype = ctypes.c_size_t
        lib.ZSTD_findFrameCompressedSize.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        return lib
    except (OSError, AttributeError):
        return None


_ZSTD = _load_zstd()


def coefficients(cipher: seal.Ciphertext) -> np.ndarray:
    """Every coefficient of ``cipher`` (all polynomials, all moduli, SEAL's order) as uint64."""
    count = cipher.size() * cipher.poly_modulus_degree() * cipher.coeff_modulus_size()
    data = _parsed(cipher, count)
    if data is None:
        data = np.fromiter(map(cipher.__getitem__, range(count)), dtype=np.uint64, count=count)
    return data


def _parsed(cipher: seal.Ciphertext, count: int) -> np.ndarray | None:
    blob = seal_io.dump(cipher)
    if len(blob) < _HEADER.size:
        return None
    magic, header_size, _, _, mode, _, total = _HEADER.unpack_from(blob)
    if magic != _MAGIC or header_size != _HEADER.size or total != len(blob):
        return None
    raw = _decompress(mode, blob[_HEADER.size:], _MEMBERS.size + _HEADER.size + 8 + 8 * count)
    if raw is None or len(raw) != _MEMBERS.size + _HEADER.size + 8 + 8 * count:
        return None
    *_, ntt, size, degree, moduli, _, _ = _MEMBERS.unpack_from(raw)
    inner = _HEADER.unpack_from(raw, _MEMBERS.size)
    (stored,) = struct.unpack_from("<Q", raw, _MEMBERS.size + _HEADER.size)
    expected = (bool(ntt), size, degree, moduli, inner[0], inner[4], inner[6], stored)
    if expected != (cipher.is_ntt_form(), cipher.size(), cipher.poly_modulus_degree(), cipher.coeff_modulus_size(),
                    _MAGIC, 0, _HEADER.size + 8 + 8 * count, count):
        return None
    data = np.frombuffer(raw, dtype="<u8", offset=len(raw) - 8 * count).astype(np.uint64)
    if count and (int(data[0]) != cipher[0] or int(data[-1]) != cipher[count - 1]):
        return None
    return data


def ciphertext_bytes(parms_id: list[int], polys: np.ndarray, *, ntt: bool, scale: float = 1.0) -> bytes:
    """SEAL's uncompressed serialization of a ciphertext under one prime whose polynomials are the rows of
    ``polys`` (uint64 residues): what ``Ciphertext.load`` reads, validating it against the context."""
    size, degree = polys.shape
    data = polys.astype("<u8").tobytes()
    inner = _header(_HEADER.size + 8 + len(data)) + struct.pack("<Q", polys.size) + data
    members = _MEMBERS.pack(*parms_id, int(ntt), size, degree, 1, scale, 1) + inner
    return _header(_HEADER.size + len(members)) + members


def plaintext_coefficients(plain: seal.Plaintext) -> np.ndarray:
    """Every coefficient of ``plain`` (as stored: NTT form after a CKKS decryption) as uint64."""
    count = plain.coeff_count()
    blob = seal_io.dump(plain)
    members = struct.Struct("<4QQd")
    magic, header_size, _, _, mode, _, total = _HEADER.unpack_from(blob)
    size = members.size + _HEADER.size + 8 + 8 * count
    raw = _decompress(mode, blob[_HEADER.size:], size) if (magic, header_size, total) == (
        _MAGIC, _HEADER.size, len(blob)) else None
    if raw is None or len(raw) != size:
        return np.fromiter((plain[i] for i in range(count)), dtype=np.uint64, count=count)
    *_, stored_count, _ = members.unpack_from(raw)
    (stored,) = struct.unpack_from("<Q", raw, members.size + _HEADER.size)
    data = np.frombuffer(raw, dtype="<u8", offset=len(raw) - 8 * count).astype(np.uint64)
    if (stored_count, stored) != (count, count) or (count and (int(data[0]) != plain[0]
                                                                or int(data[-1]) != plain[count - 1])):
        return np.fromiter((plain[i] for i in range(count)), dtype=np.uint64, count=count)
    return data


def _header(total: int) -> bytes:
    global _VERSION
    if _VERSION is None:
        head = seal_io.dump(seal.Plaintext())
        _VERSION = head[3], head[4]
    return _HEADER.pack(_MAGIC, _HEADER.size, *_VERSION, int(seal.COMPR_MODE_TYPE.NONE), 0, total)


_VERSION: tuple[int, int] | None = None


def _decompress(mode: int, body: bytes, expected: int) -> bytes | None:
    if mode == int(seal.COMPR_MODE_TYPE.NONE):
        return body
    if mode == int(seal.COMPR_MODE_TYPE.ZLIB):
        try:
            d = zlib.decompressobj()
            out = d.decompress(body, expected + 1)
            return out if d.eof and not d.unused_data else None
        except zlib.error:
            return None
    if mode == int(seal.COMPR_MODE_TYPE.ZSTD) and _ZSTD is not None:
        if _ZSTD.ZSTD_findFrameCompressedSize(body, len(body)) != len(body):  # exactly one frame, nothing after
            return None
        out = ctypes.create_string_buffer(expected + 1)
        n = _ZSTD.ZSTD_decompress(out, expected + 1, body, len(body))
        return None if _ZSTD.ZSTD_isError(n) else out.raw[:n]
    return None
