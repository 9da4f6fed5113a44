"""Assign a recipe's requests to splits, cut them into clips, resumably, and write the manifest.

Layout of OUT:
    video/<id>.mp4  audio/<id>.wav    the clips (16 kHz mono PCM16 audio)
    meta/<id>.json                    one finished record per clip: what makes a rerun skip it
                                      (optional label fields are not in it: rows take them from the
                                      current parse, see ClipRequest.fingerprint)
    manifest.jsonl dropped.jsonl splits/{train,valid,test}.txt reorg.json
    shards/<K>-of-<N>.json            what a ``--shard K/N`` run could not cut (see :mod:`data_reorg.shards`)
Every file is written under a temporary name and renamed, so a run killed at any moment leaves only
complete files, and a rerun re-cuts exactly the clips that are missing or fail their checksum.
Splits are assigned from the parsed ids before any media is read, so a clip that cannot be cut
removes only itself: every other id keeps its split.

A shard run (``RunOptions.shard``) cuts only the sources of its shard (key: the source video's path
relative to the common folder of every source, so machines that mount the corpus elsewhere agree)
and writes its record instead of the shared files; a merge (``RunOptions.merge``) cuts nothing and
writes the shared files from the clips' meta and the records, byte for byte as one plain run would.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from data_reorg.io import remove_temporaries, safe_name, sha256_file, write_jsonl_atomic, write_text_atomic
from data_reorg.manifest import EXTRA_LABEL_FIELDS, MANIFEST_FIELDS, SPLITS, ClipRequest, Drop, Note, ParseResult
from data_reorg.media import MediaError, VideoCut, cut_video, frame_span, probe_video, read_audio, write_wav
from data_reorg.shards import Shard, merge_failures, write_record
from data_reorg.splits import SplitResult, SplitSpec, assign_splits
from data_reorg.workers import worker_pool

log = logging.getLogger("data_reorg")


class StrictModeError(RuntimeError):
    """Raised under ``--strict`` at the first utterance that could not be kept."""


@dataclass(frozen=True)
class RunOptions:
    out_dir: Path
    jobs: int = 1
    strict: bool = False
    progress: bool = True
    shard: Shard | None = None  # cut only this shard's sources, write its record, not the shared files
    merge: bool = False  # cut nothing: the shared files from the finished shards


@dataclass
class RunSummary:
    kept: int
    dropped: int
    resumed: int
    split_counts: dict[str, int]
    missing_from_split_lists: int
    audio_sources: dict[str, int] = field(default_factory=dict)  # manifest ``audio_source`` -> clips
    warnings: int = 0  # fallbacks while reading (reorg.json ``warnings``)
    record: Path | None = None  # a shard run's record, which it writes instead of the shared files


def resolve_source(src: Path, out: Path) -> Path:
    """``src`` resolved, once it exists and ``out`` is not inside it: data-reorg never writes inside the
    source. Resolved because resume fingerprints hold source paths: relative and absolute runs agree."""
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise FileNotFoundError(f"source folder {src} does not exist")
    src_resolved, out_resolved = src.resolve(), out.resolve()
    if out_resolved == src_resolved or src_resolved in out_resolved.parents:
        raise ValueError(f"OUT {out} is inside SRC {src}: data-reorg never writes inside the source")
    return src_resolved


def reorganize(parsed: ParseResult, split_spec: SplitSpec, options: RunOptions) -> RunSummary:
    out = Path(options.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    drops = list(parsed.drops)
    problems = [drop for drop in drops if not drop.expected]
    if options.strict and problems:
        raise StrictModeError(f"{problems[0].id}: {problems[0].reason}")
    for note in parsed.notes:
        log.warning("%s: %s", note.where, note.warning)
    requests = _unique_requests(parsed.requests, drops)
    split = _assign_splits(split_spec, requests)
    drops.extend(split.drops)
    assigned = {item: requests[item] for item in split.assignment}
    if options.shard is not None:
        return _reorganize_shard(assigned, source_shard_keys(requests.values()), options)
    if not options.merge:
        _remove_stale_temporaries(out)
    records, pending = _resume(assigned, out)
    cut_records, cut_drops = _merged_drops(pending, out, options) if options.merge else _cut_all(pending, out, options)
    records.update(cut_records)
    drops.extend(cut_drops)
    rows = [_manifest_row(records[item], split.assignment[item], requests[item]) for item in sorted(records)]
    summary = _summarize(rows, len(drops), len(records) - len(cut_records), split, parsed.notes)
    _write_outputs(out, rows, drops, parsed.notes, split_spec, summary)
    return summary


def _reorganize_shard(requests: dict[str, ClipRequest], keys: dict[Path, str], options: RunOptions) -> RunSummary:
    """Cut the clips of the shard's sources that are not finished; record what could not be cut."""
    out, shard = Path(options.out_dir), options.shard
    mine = {item: request for item, request in requests.items() if shard.owns(keys[request.video])}
    _remove_temporaries_of(out, {safe_name(item) for item in mine})
    records, pending = _resume(mine, out)
    cut_records, cut_drops = _cut_all(pending, out, options)
    failed = [{**drop.row(), "fingerprint": mine[drop.id].fingerprint()} for drop in cut_drops]
    record = write_record(shard, out, len(mine), failed)
    kept = len(records) + len(cut_records)
    return RunSummary(kept, len(cut_drops), len(records), {}, 0, record=record)


def _merged_drops(pending: list[ClipRequest], out: Path, options: RunOptions) -> tuple[dict, list[Drop]]:
    """The drops the shard records hold for the clips no shard finished (ShardsIncomplete if any is
    in no record); nothing is cut."""
    found = merge_failures(((request.id, request.fingerprint()) for request in pending), out, str(out))
    drops = [Drop(request.id, found[request.id]["reason"]) for request in pending]
    if options.strict and drops:
        raise StrictModeError(f"{drops[0].id}: {drops[0].reason}")
    return {}, drops


def source_shard_keys(requests) -> dict[Path, str]:
    """The shard key of every source video: its path relative to the folder that holds them all."""
    videos = sorted({request.video for request in requests})
    if not videos:
        return {}
    root = Path(os.path.commonpath([str(video) for video in videos]))
    return {video: Path(os.path.relpath(video, root)).as_posix() for video in videos}


_TEMPORARY = re.compile(r"^\.(.+)\.tmp\d+")


def _remove_temporaries_of(out: Path, names: set[str]) -> None:
    """The temporaries a killed run of this shard left (other shards may be writing theirs now)."""
    for folder in ("video", "audio", "meta"):
        for leftover in (out / folder).glob(".*.tmp*"):
            match = _TEMPORARY.match(leftover.name)
            if match and match.group(1) in names:
                leftover.unlink(missing_ok=True)


def _summarize(rows: list[dict], dropped: int, resumed: int, split: SplitResult, notes: list[Note]) -> RunSummary:
    split_counts = {name: sum(row["split"] == name for row in rows) for name in SPLITS}
    audio_sources = dict(sorted(Counter(row["audio_source"] for row in rows).items()))
    return RunSummary(
        len(rows), dropped, resumed, split_counts, len(split.missing_from_corpus), audio_sources, len(notes)
    )


def _assign_splits(spec: SplitSpec, requests: dict[str, ClipRequest]) -> SplitResult:
    """Splits of every parsed, labelled id (grouped by ``request.group``), before any media is read."""
    split = assign_splits(spec, {item: request.group for item, request in requests.items()})
    if split.missing_from_corpus:
        log.warning(
            "%d ids of the split lists are not in this corpus copy (e.g. %s)",
            len(split.missing_from_corpus),
            ", ".join(split.missing_from_corpus[:5]),
        )
    return split


def _manifest_row(record: dict, split: str, request: ClipRequest) -> dict:
    """The clip's finished record plus its split and, from the current request, its optional labels
    (never from the record, so a rerun over an older output still writes them)."""
    row = {key: split if key == "split" else record[key] for key in MANIFEST_FIELDS}
    row.update((key, request.extra_labels[key]) for key in EXTRA_LABEL_FIELDS if key in request.extra_labels)
    return row


def _unique_requests(requests: list[ClipRequest], drops: list[Drop]) -> dict[str, ClipRequest]:
    unique: dict[str, ClipRequest] = {}
    for request in requests:
        if request.id in unique:
            drops.append(Drop(request.id, "duplicate utterance id (first occurrence kept)"))
        else:
            unique[request.id] = request
    return unique


def _meta_path(out: Path, item: str) -> Path:
    return out / "meta" / f"{safe_name(item)}.json"


def _resume(requests: dict[str, ClipRequest], out: Path) -> tuple[dict[str, dict], list[ClipRequest]]:
    """Split requests into finished records (meta present, same request, files verified) and pending."""
    done: dict[str, dict] = {}
    pending = []
    for item, request in requests.items():
        record = _finished_record(_meta_path(out, item), request)
        if record is not None and clip_problems(out, record) == []:
            done[item] = record
        else:
            pending.append(request)
    return done, pending


def _finished_record(meta: Path, request: ClipRequest) -> dict | None:
    """The record saved for ``request`` by an earlier run, or None (absent, unreadable, or stale)."""
    if not meta.is_file():
        return None
    try:
        saved = json.loads(meta.read_text(encoding="utf-8"))
        record = saved["record"] if saved["fingerprint"] == request.fingerprint() else None
        return record if record is None or set(MANIFEST_FIELDS) - {"split"} <= set(record) else None
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("%s is unreadable (%s): the clip is cut again", meta, error)
        return None


def _remove_stale_temporaries(out: Path) -> None:
    """Temporary files a killed run left behind (``.<name>.tmp<pid>...``); one run writes OUT at a time."""
    for folder in ("video", "audio", "meta"):
        remove_temporaries(out / folder)


def clip_problems(out: Path, record: dict) -> list[str]:
    """Why the clip files of a manifest record do not match it; empty when they do."""
    problems = []
    for kind in ("video", "audio"):
        path = out / record[kind]
        if not path.is_file():
            problems.append(f"{kind} file {record[kind]} is missing")
        elif sha256_file(path) != record["sha256"][kind]:
            problems.append(f"{kind} file {record[kind]} fails its sha256 check")
    return problems


def _cut_all(pending: list[ClipRequest], out: Path, options: RunOptions):
    by_video: dict[Path, list[ClipRequest]] = defaultdict(list)
    for request in pending:
        by_video[request.video].append(request)
    records: dict[str, dict] = {}
    drops: list[Drop] = []
    bar = tqdm(total=len(pending), desc="cutting clips", unit="clip", disable=not options.progress or None)
    tasks = [(video, group, out) for video, group in sorted(by_video.items())]
    with bar, contextlib.closing(_cut_sources(tasks, options.jobs)) as results:
        for group_records, group_drops in results:
            if options.strict and group_drops:
                raise StrictModeError(f"{group_drops[0].id}: {group_drops[0].reason}")
            for drop in group_drops:
                log.warning("dropped %s: %s", drop.id, drop.reason)
            records.update(group_records)
            drops.extend(group_drops)
            bar.update(len(group_records) + len(group_drops))
    return records, drops


def _cut_sources(tasks: list[tuple], jobs: int) -> Iterator[tuple[dict[str, dict], list[Drop]]]:
    """:func:`cut_source` of each task, in order: in ``jobs`` worker processes, or here for one job."""
    if jobs > 1 and len(tasks) > 1:
        with worker_pool(jobs) as pool:
            yield from pool.map(_cut_source_star, tasks)
    else:
        yield from map(_cut_source_star, tasks)


def _cut_source_star(task):
    return cut_source(*task)


def cut_source(video: Path, requests: list[ClipRequest], out: Path) -> tuple[dict[str, dict], list[Drop]]:
    """Cut every request of one source video: audio first (cheap), then one decoding pass for video."""
    try:
        info = probe_video(video)
    except MediaError as error:
        return {}, [Drop(request.id, str(error)) for request in requests]
    drops: list[Drop] = []
    audio = {}
    cuts = []
    for request in requests:
        start, end = max(0.0, request.start), min(request.end, info.duration)
        if start >= info.duration:
            drops.append(
                Drop(
                    request.id,
                    f"{video}: interval [{request.start}, {request.end}] starts after "
                    f"the end of the video ({info.duration:.3f} s)",
                )
            )
            continue
        try:
            audio[request.id] = _read_request_audio(request, info.duration)
        except MediaError as error:
            drops.append(Drop(request.id, str(error)))
            continue
        first, stop = frame_span(start, end, info)
        cuts.append(VideoCut(request.id, first, stop, out / "video" / f"{safe_name(request.id)}.mp4", request.crop))
    frames = cut_video(video, cuts, info) if cuts else {}
    by_id = {request.id: request for request in requests}
    records = {}
    for cut in cuts:
        result = frames[cut.key]
        if isinstance(result, MediaError):
            drops.append(Drop(cut.key, str(result)))
            continue
        request = by_id[cut.key]
        records[cut.key] = _finish_clip(
            request, out, audio[cut.key], info.fps, result, max(0.0, request.start), min(request.end, info.duration)
        )
    return records, drops


def _read_request_audio(request: ClipRequest, video_duration: float):
    """(samples, source name) of the request's audio, falling back to ``fallback_audio``; an interval
    ends where the video ends. The name goes into the manifest, so a fallback is never silent."""
    sources = [request.audio] + ([request.fallback_audio] if request.fallback_audio else [])
    errors = []
    for source in sources:
        end = None if source.end is None else min(source.end, video_duration)
        try:
            return read_audio(source.path, source.start, end, source.channel), source.name
        except MediaError as error:
            errors.append(str(error))
    raise MediaError("; ".join(errors))


def _finish_clip(
    request: ClipRequest, out: Path, audio: tuple, fps: float, num_frames: int, start: float, end: float
) -> dict:
    samples, audio_source = audio
    name = safe_name(request.id)
    video_rel, audio_rel = f"video/{name}.mp4", f"audio/{name}.wav"
    write_wav(out / audio_rel, samples)
    record = {
        "id": request.id,
        "dataset": request.dataset,
        "label": request.label,
        "start": round(start, 4),
        "end": round(end, 4),
        "text": request.text,
        "video": video_rel,
        "audio": audio_rel,
        "side": request.side,
        "fps": fps,
        "num_frames": num_frames,
        "num_samples": int(len(samples)),
        "sha256": {"video": sha256_file(out / video_rel), "audio": sha256_file(out / audio_rel)},
        "audio_source": audio_source,
    }
    meta = {"fingerprint": request.fingerprint(), "record": record}
    write_text_atomic(_meta_path(out, request.id), json.dumps(meta, ensure_ascii=False))
    return record


def _write_outputs(
    out: Path, rows: list[dict], drops: list[Drop], notes: list[Note], spec: SplitSpec, summary: RunSummary
) -> None:
    for name in SPLITS:
        ids = [row["id"] for row in rows if row["split"] == name]
        write_text_atomic(out / "splits" / f"{name}.txt", "".join(item + "\n" for item in ids))
    write_jsonl_atomic(out / "dropped.jsonl", [drop.row() for drop in sorted(drops, key=lambda d: d.id)])
    run = {
        "split": asdict(spec),
        "kept": summary.kept,
        "dropped": summary.dropped,
        "split_list_ids_missing_from_corpus": summary.missing_from_split_lists,
        "audio_sources": summary.audio_sources,
        "warnings": [note.row() for note in notes],
    }
    write_text_atomic(out / "reorg.json", json.dumps(run, indent=2, ensure_ascii=False))
    write_jsonl_atomic(out / "manifest.jsonl", rows)
