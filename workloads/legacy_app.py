"""What the old app did to render the video page: fetch broadly, then filter, sort, join and
compute in Python. ``vpbench run`` times it beside the SQL-level ``video_page`` scenario.

It reads whatever schema state the database is in (text ids, uuid links beside them or
alone; JSON as text, jsonb beside it or alone; stored or computed scores; metadata in text
or in columns), like the app had to.
"""

from __future__ import annotations

import json
import re
from typing import Any

from psycopg import Connection
from psycopg.rows import dict_row

VOICE_V1 = re.compile(r"^\[voice memo\] duration (\d+):([0-5]\d) \| format ([a-z0-9]+) ")
VOICE_V2 = re.compile(r"^Voice memo \((\d+)s, ([a-z0-9]+), ")
PASSED_PERCENTAGE = 70


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _typed(attempt: dict[str, Any], column: str, typed: str) -> Any:
    """The typed column that supersedes ``column`` where the schema has one, else ``column``."""
    return attempt[typed] if typed in attempt else attempt[column]


def _link(attempt: dict[str, Any], name: str) -> str:
    """A quiz attempt's ``video``/``course`` link as text, from its uuid column if any."""
    return str(_typed(attempt, f"{name}_id", f"{name}_uuid"))


def _score(attempt: dict[str, Any]) -> tuple[int, int, float]:
    """Stored score/total/percentage, or computed from the answers once they are not stored."""
    if attempt.get("score") is not None:
        return attempt["score"], attempt["total"], float(attempt["percentage"])
    questions = _json(_typed(attempt, "questions", "questions_json"))
    correct = {q["id"]: q["correct"] for q in questions}
    answers = _json(_typed(attempt, "answers", "answers_json"))
    score = sum(1 for a in answers if correct.get(a["question_id"]) == a["choice"])
    total = len(questions)
    return score, total, round(100 * score / total, 2) if total else 0.0


def _voice_metadata(memo: dict[str, Any]) -> tuple[int | None, str | None]:
    if memo.get("audio_duration_seconds") is not None:
        return memo["audio_duration_seconds"], memo["audio_format"]
    if match := VOICE_V1.match(memo["content"]):
        return int(match[1]) * 60 + int(match[2]), match[3]
    if match := VOICE_V2.match(memo["content"]):
        return int(match[1]), match[2]
    return None, None


def render_video_page(conn: Connection[Any], params: dict[str, Any]) -> dict[str, Any]:
    """The data of one video page for ``params['user_id']`` and ``params['video_id']``."""
    user_id, video_id = str(params["user_id"]), str(params["video_id"])
    cur = conn.cursor(row_factory=dict_row)
    video = cur.execute("SELECT * FROM videos WHERE id = %s", [video_id]).fetchone()
    if video is None:
        return {}
    course = cur.execute("SELECT * FROM courses WHERE id = %s", [video["course_id"]]).fetchone()
    siblings = cur.execute(
        "SELECT * FROM videos WHERE course_id = %s", [video["course_id"]]
    ).fetchall()
    by_position = {v["position"]: v for v in siblings}
    previous, following = (
        by_position.get(video["position"] - 1),
        by_position.get(video["position"] + 1),
    )

    attempts = cur.execute("SELECT * FROM quiz_attempts WHERE user_id = %s", [user_id]).fetchall()
    mine = sorted(
        (a for a in attempts if _link(a, "video") == video_id),
        key=lambda a: a["completed_at"],
        reverse=True,
    )[:20]
    course_videos = {str(v["id"]) for v in siblings}
    best: dict[str, float] = {}
    for attempt in attempts:
        if _link(attempt, "course") == str(video["course_id"]):
            percentage = _score(attempt)[2]
            key = _link(attempt, "video")
            best[key] = max(best.get(key, 0.0), percentage)

    reflections = cur.execute("SELECT * FROM reflections WHERE user_id = %s", [user_id]).fetchall()
    my_reflections = sorted(
        (r for r in reflections if str(r["video_id"]) == video_id),
        key=lambda r: r["created_at"],
        reverse=True,
    )[:50]

    on_video = cur.execute("SELECT * FROM reflections WHERE video_id = %s", [video_id]).fetchall()
    memos = sorted((r for r in on_video if r["kind"] == "voice"), key=lambda r: r["created_at"],
                   reverse=True)[:10]  # fmt: skip
    authors = {
        str(u["id"]): u["display_name"]
        for u in cur.execute(
            "SELECT id, display_name FROM users WHERE id = ANY(%s)", [[m["user_id"] for m in memos]]
        )
    }
    return {
        "video": video,
        "course": course,
        "videos_in_course": len(siblings),
        "previous_video_id": previous and previous["id"],
        "next_video_id": following and following["id"],
        "quiz_attempts": [(a["id"], *_score(a), a["completed_at"]) for a in mine],
        "reflections": [(r["id"], r["kind"], r["created_at"]) for r in my_reflections],
        "progress": {
            "videos_total": len(siblings),
            "videos_passed": sum(1 for v, p in best.items() if p >= PASSED_PERCENTAGE),
            "videos_with_attempts_in_course": len(course_videos.intersection(best)),
        },
        "voice_memos": [
            (m["id"], authors.get(str(m["user_id"])), m["created_at"], *_voice_metadata(m))
            for m in memos
        ],
    }
