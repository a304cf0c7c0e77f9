"""Generate the legacy database's rows as COPY text, vectorised with numpy.

Everything is a pure function of (profile, seed, dirty rates): each fixed-size chunk draws
from its own ``default_rng([seed, table, chunk])``, so the same inputs give byte-identical
data. Popularity is Zipf-like (a few courses and users dominate), timestamps spread over the
months before a fixed reference date.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vpbench.dataset._text_pools import StrArray, TextPools, build_text_pools, copy_escape
from vpbench.dataset.profiles import VOICE_MEMO_SHARE, DirtyRates, Profile

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

CHUNK_ROWS = 50_000
REFERENCE_TIME = np.datetime64("2026-06-01T00:00:00", "s")
ACTIVITY_SECONDS = 180 * 24 * 3600
NULL = "\\N"
OPTIONS_PER_QUESTION = 4
MIN_QUESTIONS, MAX_QUESTIONS = 3, 6
MEDIA_URL = "https://media.learnapp.example/memos"
AUDIO_FORMATS = ("m4a", "webm", "mp3", "ogg")
AUDIO_FORMAT_SHARE = (0.5, 0.3, 0.15, 0.05)
AUDIO_KBPS = np.array([64, 48, 128, 64])
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_TABLE_KEYS = {"users": 1, "courses": 2, "videos": 3, "quiz_attempts": 4, "reflections": 5}


@dataclass(frozen=True)
class Chunk:
    """A block of COPY text rows and the dirty rows it contains, by knob."""

    text: str
    rows: int
    dirty: Mapping[str, int]


@dataclass(frozen=True)
class TableSpec:
    """One table to load: its COPY column list, size and a chunk generator."""

    name: str
    columns: tuple[str, ...]
    rows: int
    make_chunk: Callable[[np.random.Generator, int, int], Chunk]

    def chunks(self, seed: int) -> Iterator[Chunk]:
        for index, start in enumerate(range(0, self.rows, CHUNK_ROWS)):
            rng = np.random.default_rng([seed, _TABLE_KEYS[self.name], index])
            yield self.make_chunk(rng, start, min(CHUNK_ROWS, self.rows - start))


def uuid_strings(rng: np.random.Generator, count: int) -> StrArray:
    """Random version-4 UUIDs as strings, without a Python loop."""
    raw = rng.integers(0, 256, size=(count, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hexed = np.empty((count, 32), dtype=np.uint8)
    hexed[:, 0::2] = _HEX[raw >> 4]
    hexed[:, 1::2] = _HEX[raw & 0x0F]
    text = np.full((count, 36), ord("-"), dtype=np.uint8)
    for src, dst in ((0, 0), (8, 9), (12, 14), (16, 19)):
        width = 8 if src == 0 else 4
        text[:, dst : dst + width] = hexed[:, src : src + width]
    text[:, 24:36] = hexed[:, 20:32]
    return text.view("S36").ravel().astype("U36").astype(object)


def zipf_cdf(rng: np.random.Generator, count: int, skew: float) -> FloatArray:
    """Cumulative popularity of ``count`` items with Zipf weights, ranks shuffled."""
    weights = 1.0 / np.arange(1, count + 1, dtype=np.float64) ** skew
    rng.shuffle(weights)
    return _normalised_cdf(weights)


def _normalised_cdf(weights: FloatArray) -> FloatArray:
    cdf: FloatArray = np.cumsum(weights)
    normalised: FloatArray = cdf / cdf[-1]
    return normalised


def sample(rng: np.random.Generator, cdf: FloatArray, count: int) -> IntArray:
    index: IntArray = np.searchsorted(cdf, rng.random(count), side="right").astype(np.int64)
    return np.minimum(index, len(cdf) - 1)


def timestamps(seconds_before_reference: IntArray) -> StrArray:
    """ISO timestamps (UTC; the loader sets the session time zone to UTC)."""
    moments = REFERENCE_TIME - seconds_before_reference.astype("timedelta64[s]")
    return np.datetime_as_string(moments, unit="s").astype(object)


def copy_text(*columns: StrArray) -> str:
    """Join columns of already-escaped strings into COPY text rows."""
    return "\n".join(map("\t".join, zip(*(c.tolist() for c in columns), strict=True))) + "\n"


_NUMBERS = np.array([str(i) for i in range(10_000)], dtype=object)


@dataclass(frozen=True)
class _Catalogue:
    """The small tables every chunk samples from: users, courses, videos and their quizzes."""

    user_ids: StrArray
    user_cdf: FloatArray
    user_skill: FloatArray
    course_ids: StrArray
    course_cdf: FloatArray
    video_ids: StrArray
    """alive videos first, then the deleted ones"""
    video_course_ids: StrArray
    video_course_index: IntArray
    video_positions: IntArray
    alive_videos: int
    alive_video_cdf: FloatArray
    quiz_lengths: IntArray
    quiz_correct: IntArray
    quiz_questions: StrArray


def _build_catalogue(profile: Profile, seed: int, pools: TextPools) -> _Catalogue:
    rng = np.random.default_rng([seed, 0])
    alive, deleted = profile.videos, profile.deleted_videos
    course_index = np.concatenate(
        [
            np.repeat(np.arange(profile.courses), profile.videos_per_course),
            rng.integers(0, profile.courses, deleted),
        ]
    )
    positions = np.concatenate(
        [
            np.tile(np.arange(1, profile.videos_per_course + 1), profile.courses),
            rng.integers(1, profile.videos_per_course + 1, deleted),
        ]
    )
    course_cdf = zipf_cdf(rng, profile.courses, skew=1.1)
    course_weight = np.diff(course_cdf, prepend=0.0)
    # Viewers drop off along a course: later videos are watched less.
    video_weight = course_weight[course_index[:alive]] * 0.92 ** (positions[:alive] - 1)
    course_ids = uuid_strings(rng, profile.courses)
    quiz_lengths = rng.integers(MIN_QUESTIONS, MAX_QUESTIONS + 1, alive + deleted)
    quiz_correct = rng.integers(0, OPTIONS_PER_QUESTION, (alive + deleted, MAX_QUESTIONS))
    questions = [
        _questions_json(rng, pools, int(length), correct)
        for length, correct in zip(quiz_lengths, quiz_correct, strict=True)
    ]
    return _Catalogue(
        user_ids=uuid_strings(rng, profile.users),
        user_cdf=zipf_cdf(rng, profile.users, skew=0.9),
        user_skill=rng.beta(5.0, 2.0, profile.users),
        course_ids=course_ids,
        course_cdf=course_cdf,
        video_ids=uuid_strings(rng, alive + deleted),
        video_course_ids=course_ids[course_index],
        video_course_index=course_index,
        video_positions=positions,
        alive_videos=alive,
        alive_video_cdf=_normalised_cdf(video_weight),
        quiz_lengths=quiz_lengths,
        quiz_correct=quiz_correct,
        quiz_questions=np.array(questions, dtype=object),
    )


def _questions_json(
    rng: np.random.Generator, pools: TextPools, length: int, correct: IntArray
) -> str:
    prompts = rng.integers(0, len(pools.quiz_prompts), length)
    options = rng.integers(0, len(pools.quiz_options), (length, OPTIONS_PER_QUESTION))
    # Keys in jsonb's own order (shorter first, then bytewise) so text -> jsonb -> text
    # round-trips exactly and a reversible jsonb migration needs to archive nothing.
    document = [
        {
            "id": f"q{q + 1}",
            "prompt": pools.quiz_prompts[prompts[q]],
            "correct": int(correct[q]),
            "options": [pools.quiz_options[o] for o in options[q]],
        }
        for q in range(length)
    ]
    return copy_escape(json.dumps(document, ensure_ascii=False))


def _answer_tables() -> dict[int, StrArray]:
    """Every possible answers document per quiz length, indexed by base-4 choice code."""
    tables: dict[int, StrArray] = {}
    for length in range(MIN_QUESTIONS, MAX_QUESTIONS + 1):
        codes = np.arange(OPTIONS_PER_QUESTION**length)
        digits = (codes[:, None] // OPTIONS_PER_QUESTION ** np.arange(length)) % 4
        docs = [
            json.dumps([{"choice": int(c), "question_id": f"q{q + 1}"} for q, c in enumerate(row)])
            for row in digits
        ]
        tables[length] = np.array(docs, dtype=object)
    return tables


def _percentage_table() -> StrArray:
    table = np.full((MAX_QUESTIONS + 1, MAX_QUESTIONS + 1), "0.00", dtype=object)
    for total in range(1, MAX_QUESTIONS + 1):
        for score in range(total + 1):
            table[total, score] = f"{100 * score / total:.2f}"
    return table


@dataclass(frozen=True)
class LegacyDataset:
    """The rows of one seeded legacy database, table by table in load order."""

    profile: Profile
    seed: int
    dirty: DirtyRates
    tables: tuple[TableSpec, ...]


def build_dataset(profile: Profile, seed: int, dirty: DirtyRates) -> LegacyDataset:
    """Plan the dataset; rows are generated lazily, chunk by chunk, as the loader asks."""
    pools = build_text_pools(seed)
    catalogue = _build_catalogue(profile, seed, pools)
    maker = _RowMaker(profile, pools, catalogue, dirty)
    tables = (
        TableSpec("users", ("id", "email", "display_name", "created_at"), profile.users,
                  maker.users),
        TableSpec("courses", ("id", "title", "description", "created_at"), profile.courses,
                  maker.courses),
        TableSpec("videos",
                  ("id", "course_id", "position", "title", "duration_seconds", "created_at"),
                  profile.videos, maker.videos),
        TableSpec("quiz_attempts",
                  ("id", "user_id", "video_id", "course_id", "questions", "answers", "score",
                   "total", "percentage", "started_at", "completed_at"),
                  profile.quiz_attempts, maker.quiz_attempts),
        TableSpec("reflections",
                  ("id", "user_id", "video_id", "course_id", "kind", "content", "created_at"),
                  profile.reflections, maker.reflections),
    )  # fmt: skip
    return LegacyDataset(profile, seed, dirty, tables)


class _RowMaker:
    """Chunk generators for each table, sharing the catalogue and text pools."""

    def __init__(
        self, profile: Profile, pools: TextPools, catalogue: _Catalogue, dirty: DirtyRates
    ) -> None:
        self.profile = profile
        self.pools = pools
        self.cat = catalogue
        self.dirty = dirty
        self.answer_tables = _answer_tables()
        self.percentages = _percentage_table()
        self.email_names = np.array(
            [n.lower().replace("'", "").replace(" ", "") for n in pools.last_names], dtype=object
        )

    def _pick(self, rng: np.random.Generator, pool: StrArray, count: int) -> StrArray:
        picked: StrArray = pool[rng.integers(0, len(pool), count)]
        return picked

    def users(self, rng: np.random.Generator, start: int, count: int) -> Chunk:
        first = rng.integers(0, len(self.pools.first_names), count)
        last = rng.integers(0, len(self.pools.last_names), count)
        domains = self._pick(rng, self.pools.email_domains, count).tolist()
        firsts = self.pools.first_names[first].tolist()
        lasts = self.pools.last_names[last].tolist()
        emails = np.array(
            [
                f"{f.lower()}.{n}{start + i}@{d}"
                for i, (f, n, d) in enumerate(
                    zip(firsts, self.email_names[last].tolist(), domains, strict=True)
                )
            ],
            dtype=object,
        )
        names = np.array([f"{f} {n}" for f, n in zip(firsts, lasts, strict=True)], dtype=object)
        created = timestamps(rng.integers(ACTIVITY_SECONDS, 3 * ACTIVITY_SECONDS, count))
        ids = self.cat.user_ids[start : start + count]
        return Chunk(copy_text(ids, emails, names, created), count, {})

    def courses(self, rng: np.random.Generator, start: int, count: int) -> Chunk:
        ids = self.cat.course_ids[start : start + count]
        titles = self._pick(rng, self.pools.course_titles, count)
        descriptions = self._pick(rng, self.pools.course_descriptions, count)
        created = timestamps(rng.integers(2 * ACTIVITY_SECONDS, 4 * ACTIVITY_SECONDS, count))
        return Chunk(copy_text(ids, titles, descriptions, created), count, {})

    def videos(self, rng: np.random.Generator, start: int, count: int) -> Chunk:
        rows = slice(start, start + count)
        durations = np.clip(rng.lognormal(np.log(600), 0.5, count), 60, 5400).astype(np.int64)
        created = timestamps(rng.integers(ACTIVITY_SECONDS, 2 * ACTIVITY_SECONDS, count))
        text = copy_text(
            self.cat.video_ids[rows],
            self.cat.video_course_ids[rows],
            _NUMBERS[self.cat.video_positions[rows]],
            self._pick(rng, self.pools.video_titles, count),
            _NUMBERS[durations],
            created,
        )
        return Chunk(text, count, {})

    def _videos_with_deleted(
        self, rng: np.random.Generator, count: int, deleted_share: float
    ) -> tuple[IntArray, npt.NDArray[np.bool_]]:
        """Popular alive videos, with ``deleted_share`` of rows moved to deleted videos."""
        videos = sample(rng, self.cat.alive_video_cdf, count)
        deleted = rng.random(count) < deleted_share
        videos[deleted] = self.cat.alive_videos + rng.integers(
            0, self.profile.deleted_videos, int(deleted.sum())
        )
        return videos, deleted

    def quiz_attempts(self, rng: np.random.Generator, start: int, count: int) -> Chunk:
        users = sample(rng, self.cat.user_cdf, count)
        videos, orphaned = self._videos_with_deleted(rng, count, self.dirty.orphaned_quiz_attempts)
        lengths = self.cat.quiz_lengths[videos]
        correct = self.cat.quiz_correct[videos]
        knows = rng.random((count, MAX_QUESTIONS)) < self.cat.user_skill[users][:, None]
        wrong = (correct + rng.integers(1, OPTIONS_PER_QUESTION, correct.shape)) % 4
        choices = np.where(knows, correct, wrong)
        asked = np.arange(MAX_QUESTIONS)[None, :] < lengths[:, None]
        score = ((choices == correct) & asked).sum(axis=1)
        codes = (choices * OPTIONS_PER_QUESTION ** np.arange(MAX_QUESTIONS) * asked).sum(axis=1)
        answers = np.empty(count, dtype=object)
        for length, table in self.answer_tables.items():
            has_length = lengths == length
            answers[has_length] = table[codes[has_length]]
        stale = rng.random(count) < self.dirty.stale_scores
        # A shift in 1..length modulo length+1 never lands back on the true score.
        shift = rng.integers(1, lengths + 1)
        stored = np.where(stale, (score + shift) % (lengths + 1), score)
        completed = rng.integers(0, ACTIVITY_SECONDS, count)
        started = completed + rng.integers(45, 1500, count)
        text = copy_text(
            uuid_strings(rng, count),
            self.cat.user_ids[users],
            self.cat.video_ids[videos],
            self.cat.video_course_ids[videos],
            self.cat.quiz_questions[videos],
            answers,
            _NUMBERS[stored],
            _NUMBERS[lengths],
            self.percentages[lengths, stored],
            timestamps(started),
            timestamps(completed),
        )
        dirty = {"orphaned_quiz_attempts": int(orphaned.sum()), "stale_scores": int(stale.sum())}
        return Chunk(text, count, dirty)

    def reflections(self, rng: np.random.Generator, start: int, count: int) -> Chunk:
        ids = uuid_strings(rng, count)
        users = sample(rng, self.cat.user_cdf, count)
        videos, dangling = self._videos_with_deleted(
            rng, count, self.dirty.dangling_reflection_links
        )
        draw = rng.random(count)
        null_course = draw < self.dirty.null_reflection_course
        null_video = ~null_course & (
            draw < self.dirty.null_reflection_course + self.dirty.null_reflection_video
        )
        null_video &= ~dangling
        null_course &= ~dangling
        video_ids = self.cat.video_ids[videos]
        video_ids[null_video] = NULL
        course_ids = self.cat.video_course_ids[videos]
        course_ids[null_course] = NULL
        voice = rng.random(count) < VOICE_MEMO_SHARE
        kinds = np.where(voice, "voice", "text").astype(object)
        content = self._pick(rng, self.pools.reflections, count)
        content[voice], malformed = self._voice_memos(rng, ids[voice])
        text = copy_text(
            ids,
            self.cat.user_ids[users],
            video_ids,
            course_ids,
            kinds,
            content,
            timestamps(rng.integers(0, ACTIVITY_SECONDS, count)),
        )
        dirty = {
            "null_reflection_course": int(null_course.sum()),
            "null_reflection_video": int(null_video.sum()),
            "dangling_reflection_links": int(dangling.sum()),
            "malformed_voice_metadata": malformed,
        }
        return Chunk(text, count, dirty)

    def _voice_memos(self, rng: np.random.Generator, ids: StrArray) -> tuple[StrArray, int]:
        """Voice-memo content: a metadata header in one of two app-version formats, then a
        transcript. Returns the contents and how many headers are malformed."""
        count = len(ids)
        seconds = np.clip(rng.lognormal(np.log(75), 0.8, count), 3, 1800).astype(np.int64)
        formats = rng.choice(len(AUDIO_FORMATS), count, p=AUDIO_FORMAT_SHARE)
        size_bytes = (seconds * AUDIO_KBPS[formats] * 125 * rng.uniform(0.9, 1.1, count)).astype(
            np.int64
        )
        newer_app = rng.random(count) < 0.4
        malformed = rng.random(count) < self.dirty.malformed_voice_metadata
        transcripts = self._pick(rng, self.pools.transcripts, count).tolist()
        memos = []
        for i, memo_id in enumerate(ids.tolist()):
            fmt = AUDIO_FORMATS[formats[i]]
            secs, size = int(seconds[i]), int(size_bytes[i])
            url = f"{MEDIA_URL}/{memo_id}.{fmt}"
            if malformed[i]:
                header = (
                    "Voice memo (upload failed)"
                    if newer_app[i]
                    else "[voice memo] duration ?:?? | format  | size unknown | "
                )
            elif newer_app[i]:
                header = f"Voice memo ({secs}s, {fmt}, {size / 1_048_576:.1f} MB): {url}"
            else:
                header = (
                    f"[voice memo] duration {secs // 60}:{secs % 60:02d} | format {fmt} "
                    f"| size {size // 1024} KB | {url}"
                )
            memos.append(f"{header}\\n{transcripts[i]}")
        return np.array(memos, dtype=object), int(malformed.sum())
