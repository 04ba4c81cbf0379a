"""A .tnrv file from anywhere never crashes the decoder: damaged and crafted files are refused in one
line (benchmarks/fuzz.py, a few hundred of each kind), and what the format binds is checked directly."""

import functools
import json
import struct
import sys
import time
from pathlib import Path

import pytest
import torch

from tnerv.cli import main
from tnerv.codec.bitstream import BitstreamError, unpack
from tnerv.decode import decode_frames, inspect_file

# Importable by name, as the fuzzer's spawned worker imports it (and this module, for the cases below).
sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import fuzz  # noqa: E402

PER_KIND = 25  # 25 x 20 kinds: 500 mutants (benchmarks/fuzz.py 10000 for the full count)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seeds")
    return folder, *fuzz.make_seeds(folder)


def test_hundreds_of_mutants_of_every_kind_are_refused_or_decoded_correctly():
    result = fuzz.fuzz(PER_KIND * len(fuzz.KINDS), seed=2024, timeout=60, progress=False)
    counts = result["counts"]
    assert all(sum(c.values()) == PER_KIND for c in counts.values())
    bad = {kind: {o: c[o] for o in fuzz.BAD if c[o]} for kind, c in counts.items() if any(c[o] for o in fuzz.BAD)}
    assert not bad, fuzz.table(counts)
    # Damage is refused, never decoded to other frames; most crafted files are refused too.
    for kind in fuzz.DAMAGE:
        assert counts[kind]["refused"] + counts[kind]["decoded unchanged"] == PER_KIND
        assert counts[kind]["refused"] >= PER_KIND * 0.9
    for kind in ("tensor-shape", "payload", "header-json", "nonfinite-step"):
        assert counts[kind]["refused"] >= PER_KIND * 0.9


def _with_step(data: bytes, index: int, step: float) -> bytes:
    header, header_body, bodies = fuzz.parts(data)
    _, offset, qmin, entries = struct.unpack_from("<ffiI", bodies[index])
    bodies[index] = struct.pack("<ffiI", step, offset, qmin, entries) + bodies[index][16:]
    return fuzz.frame_sections(header, header_body, bodies)


def _sleeps(seconds, data, reference, crafted, folder):
    time.sleep(seconds)
    return "refused"


def _spins(data, reference, crafted, folder):
    while True:
        pass


def test_a_hang_is_cpu_time_not_a_busy_machines_wall_clock(tmp_path, monkeypatch):
    """A case that waits (as every case does on a busy machine) past the timeout without using CPU is
    not a hang; one that waits past WALL_FACTOR times it is (a deadlock uses no CPU), and so is one that
    keeps computing past it. Before, a case was a hang whenever its wall-clock time passed the timeout."""
    waits = fuzz.Worker(tmp_path, functools.partial(_sleeps, 1.0))
    assert waits.run(b"", None, True, timeout=0.3) == "refused"
    waits.close()
    stuck = fuzz.Worker(tmp_path, functools.partial(_sleeps, 60))
    assert stuck.run(b"", None, True, timeout=0.2) == "hang"  # by the wall-clock rule: 2 s
    monkeypatch.setattr(fuzz, "WALL_FACTOR", 60)  # the wall-clock rule would wait 30 s
    spins = fuzz.Worker(tmp_path, _spins)
    started = time.monotonic()
    assert spins.run(b"", None, True, timeout=0.5) == "hang"
    assert time.monotonic() - started < 25  # the CPU rule: 0.5 s of CPU, however busy the machine
    for worker in (stuck, spins):
        worker.process.kill()


def test_the_fuzzer_checks_a_crafted_decode_instead_of_labelling_it(seeds, tmp_path, monkeypatch):
    """A crafted file that decodes to other frames counts as valid only if it passes the independent
    check: steps of 1e30 and 1e-30 do not, even with the decoder's own defences switched off (before,
    any crafted decode was labelled "decoded a valid file"); a doubled step within range does."""
    _, originals, _ = seeds
    seed = originals[1]  # HNeRV
    header, _, bodies = fuzz.parts(seed.data)
    index = max(range(len(bodies)), key=lambda i: len(bodies[i]))  # a tensor with many symbols
    step = struct.unpack_from("<f", bodies[index])[0]
    run = lambda data: fuzz.run_case(data, seed.frames, True, tmp_path)  # noqa: E731
    assert run(_with_step(seed.data, index, 1e30)) == "refused"
    assert run(_with_step(seed.data, index, step * 2)) == "decoded a valid file"
    # A decoder without its bounds and non-finite checks lets both through: the fuzzer must say so.
    import tnerv.codec.bitstream as bitstream
    import tnerv.codec.container as container
    import tnerv.decode as decode

    monkeypatch.setattr(bitstream, "check_quantiser", lambda *args: None)
    monkeypatch.setattr(container, "check_activations", lambda *args: None)
    monkeypatch.setattr(decode, "check_frames", lambda frames, *args: frames)
    for bad_step in (1e30, 1e-30):
        assert run(_with_step(seed.data, index, bad_step)) == "silent wrong decode"
    assert fuzz.quantiser_problem(fuzz.parts(_with_step(seed.data, index, 1e-30))[2][index]) is not None


def _section_spans(data: bytes) -> list[tuple[int, int]]:
    return fuzz.sections(data)


def test_swapped_and_foreign_sections_fail_their_checksum(seeds, tmp_path):
    _, originals, foreign = seeds
    data = originals[0].data
    spans = _section_spans(data)
    # Two tensor sections of equal length swapped: before version 2 this decoded to other frames.
    by_length = {}
    for a, b in spans[1:]:
        by_length.setdefault(b - a, []).append((a, b))
    pair = next(v for v in by_length.values() if len(v) > 1)
    (a1, b1), (a2, b2) = pair[:2]
    swapped = data[:a1] + data[a2:b2] + data[b1:a2] + data[a1:b1] + data[b2:]
    with pytest.raises(BitstreamError, match=r"section \d+ \(tensor '.*'\) failed its checksum"):
        unpack(swapped)
    # The first tensor section of another file of the same model and config (identical headers): the
    # header's checksum covers the preamble's digest of all tensor sections, and each tensor's
    # checksum continues from it.
    other = foreign[originals[0].model]
    (a, b), (c, d) = spans[1], _section_spans(other)[1]
    assert data[a:b] != other[c:d]
    with pytest.raises(BitstreamError, match=r"section 1 \(tensor '.*'\) failed its checksum"):
        unpack(data[:a] + other[c:d] + data[b:])
    # Sections re-framed from their bodies give the file back byte for byte.
    header, header_body, bodies = fuzz.parts(data)
    assert fuzz.frame_sections(header, header_body, bodies) == data


def test_a_payload_is_exactly_its_symbols(seeds, tmp_path):
    _, originals, _ = seeds
    header, header_body, bodies = fuzz.parts(originals[1].data)
    path = tmp_path / "crafted.tnrv"
    longest = max(range(len(bodies)), key=lambda i: len(bodies[i]))
    for change in (lambda p: p + b"\0\0\0\0", lambda p: p[:-4], lambda p: b""):
        changed = list(bodies)
        _, _, _, entries = struct.unpack_from("<ffiI", changed[longest])
        head = changed[longest][: 16 + 2 * entries]
        changed[longest] = head + change(changed[longest][16 + 2 * entries :])
        path.write_bytes(fuzz.frame_sections(header, header_body, changed))
        with pytest.raises(BitstreamError, match="cannot be decoded: the payload is not exactly"):
            decode_frames(path, 0, 1)


def test_crafted_headers_are_checked_before_anything_is_allocated(seeds, tmp_path):
    _, originals, _ = seeds
    path = tmp_path / "crafted.tnrv"
    header, _, bodies = fuzz.parts(originals[3].data)  # NeRV
    cases = [
        (["tensors", 0, "shape"], [10**9, 10**9], "has no valid shape|the config's decoder holds"),
        (["config", "channels"], -4, "must not be negative"),
        (["config", "num_blocks"], 10**6, "at most 64"),
        (["config", "stem_dims"], "wide", "is not of type"),
        (["model"], "nerf", "unknown model"),
        (["video", "height"], 10**6, "does not fit the model"),
        (["video", "fps"], 0, "frame rate"),
    ]
    for keys, value, message in cases:
        crafted = json.loads(json.dumps(header))
        target = crafted
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
        path.write_bytes(fuzz.frame_sections(crafted, json.dumps(crafted).encode(), bodies))
        for read in (inspect_file, lambda p: decode_frames(p, 0, 1)):
            with pytest.raises(BitstreamError, match=message):
                read(path)


def test_the_memory_cap_refuses_in_one_line(seeds, tmp_path, capsys):
    folder, originals, _ = seeds
    path = folder / f"{originals[0].model}-0.tnrv"
    assert main(["decode", str(path), "-o", str(tmp_path / "frames"), "--max-memory", "64K"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tnerv: error: ") and "\n" not in err and "--max-memory" in err
    assert not (tmp_path / "frames").exists()
    assert main(["decode", str(path), "-o", str(tmp_path / "frames"), "--max-memory", "1G"]) == 0
    assert len(list((tmp_path / "frames").glob("*.png"))) == fuzz.FRAMES


def test_a_decode_past_the_cap_is_counted_over_cap(seeds, tmp_path, monkeypatch):
    """The fuzzer's "over cap" can happen: a T-NeRV frame bomb (frames 16x larger) that the decoder's cost
    check refuses is counted over cap once that check is switched off (its decode then grows far past
    the fuzzer's 256 MiB)."""
    _, originals, _ = seeds
    seed = originals[0]
    header, _, bodies = fuzz.parts(seed.data)
    c, v = header["config"], header["video"]
    header, bodies = fuzz.with_config(header, list(bodies), {"height": c["height"] * 16, "width": c["width"] * 16},
                                      {"height": v["height"] * 16, "width": v["width"] * 16})
    bomb = fuzz.frame_sections(header, json.dumps(header, separators=(",", ":")).encode(), bodies)
    assert seed.model == "tnerv" and fuzz.run_case(bomb, seed.frames, True, tmp_path) == "refused"
    import tnerv.decode as decode

    monkeypatch.setattr(decode, "check_cost", lambda *args: None)
    assert fuzz.run_case(bomb, seed.frames, True, tmp_path) == "over cap"


def test_the_decoded_frames_of_a_seed_are_its_own(seeds):
    folder, originals, _ = seeds
    for seed in originals:
        frames = fuzz.decoded(folder / f"{seed.model}-0.tnrv")
        assert torch.equal(frames, seed.frames) and frames.shape == (fuzz.DECODED, 3, fuzz.HEIGHT, fuzz.WIDTH)


def test_a_crafted_segmented_file_is_valid_only_as_the_writer_packs_it(seeds, tmp_path):
    """The fuzzer's check of a segmented file (version 4) can fail: on its own header (a field the writer
    never writes) and on one of its segments (a quantiser step outside every writer's range)."""
    folder, originals, _ = seeds
    seed = next(s for s in originals if s.model == fuzz.SEGMENTED_SEED)
    path = tmp_path / "crafted.tnrv"
    path.write_bytes(seed.data)
    assert fuzz.valid_file_problem(path, seed.frames.float()) is None
    header, _, segments = fuzz.parts(seed.data)
    header["note"] = "not written by tnerv"
    path.write_bytes(fuzz.frame_sections(header, json.dumps(header).encode(), segments, fuzz.kinds_of(seed.data)))
    assert "packs other bytes" in fuzz.valid_file_problem(path, seed.frames.float())
    header, header_body, segments = fuzz.parts(seed.data)
    segments[1] = _with_step(segments[1], 0, 2.0**20)
    path.write_bytes(fuzz.frame_sections(header, header_body, segments, fuzz.kinds_of(seed.data)))
    assert fuzz.valid_file_problem(path, seed.frames.float()).startswith("segment 1: tensor")
