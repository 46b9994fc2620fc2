"""阳光17议: the monthly community consultation on the 17th — sessions, bookings, topics, agenda, minutes.

The operations here are the only way to change this data; each refuses with a Chinese reason
(ConsultationError) and never leaves a half-done change.

- A session per community per month on the 17th, made ahead of time from the community's ConsultationDefaults.
- Bookings: one row per resident per session (unique). Seats = capacity − reserved seats. A booking takes the
  session row's lock (PostgreSQL FOR UPDATE; SQLite serialises writers), counts seats and either books with a
  code or joins the waitlist in arrival order. Cancelling a seat promotes the first on the waitlist, who is told.
- Topics are proposed before the cut-off, may name one of the proposer's needs, and get an outcome after the
  meeting (立项 / 转办 / 答复 / 不予采纳 with a reason) which reaches the proposer.

By concern, each module importing only those listed before it:

- `common` — constants, `Outcome`, `ConsultationError`, the session lock, the staff check, check-in codes;
- `queries` — reading sessions (`get_session`, `next_session`, `session_view`, …);
- `bookings` — book, cancel (waitlist promotion), the resident's booking, check-in;
- `sessions` — a community's defaults, creating sessions, the staff's edit / move / cancel;
- `topics` — proposing topics, a session's and a resident's topics;
- `minutes` — the agenda draft and agenda, outcomes, the minutes;
- `reminders` — the reminder broadcasts.

The tables and statuses stay in `storage.consultation_tables`, outside this package: storage.audiences and
storage.broadcast read them, and importing any module of this package first runs this file, which imports the
operations that send broadcasts — a circle. Callers name everything from `storage.consultation`.
"""

from __future__ import annotations

from storage.audiences import audience_residents, upcoming_sessions_for
from storage.consultation.bookings import (
    BookingResult,
    book_seat,
    cancel_booking,
    check_in,
    check_in_open,
    my_booking,
    promoted_text,
)
from storage.consultation.common import (
    AGENDA_LIMIT,
    CODE_ALPHABET,
    CODE_LENGTH,
    LIST_LIMIT,
    MAX_MINUTES,
    MAX_TOPIC,
    MEETING_DAY,
    OUTCOME_LABELS,
    TZ,
    ConsultationError,
    Outcome,
    deadline_text,
    last_day,
    normalise_code,
    staff_communities,
    when_text,
)
from storage.consultation.minutes import (
    Candidate,
    add_to_agenda,
    draft_agenda,
    minutes_refusal,
    need_candidates,
    outcome_text,
    publish_minutes,
    record_outcome,
)
from storage.consultation.queries import (
    SessionView,
    get_session,
    latest_session,
    list_sessions,
    next_session,
    session_roster,
    session_view,
    sessions_for,
)
from storage.consultation.reminders import due_reminders
from storage.consultation.sessions import (
    DEFAULT_FIELDS,
    EDITABLE,
    cancel_session,
    create_upcoming_sessions,
    create_upcoming_sessions_for,
    edit_session,
    ensure_session,
    get_defaults,
    move_session,
    queue_change_notices,
    set_defaults,
)
from storage.consultation.topics import my_topics, open_needs_of, propose_topic, session_topics
from storage.consultation_tables import (
    Booking,
    BookingStatus,
    ConsultationDefaults,
    ConsultationSession,
    SessionStatus,
    Topic,
)

__all__ = [
    "AGENDA_LIMIT",
    "CODE_ALPHABET",
    "CODE_LENGTH",
    "DEFAULT_FIELDS",
    "EDITABLE",
    "LIST_LIMIT",
    "MAX_MINUTES",
    "MAX_TOPIC",
    "MEETING_DAY",
    "OUTCOME_LABELS",
    "TZ",
    "Booking",
    "BookingResult",
    "BookingStatus",
    "Candidate",
    "ConsultationDefaults",
    "ConsultationError",
    "ConsultationSession",
    "Outcome",
    "SessionStatus",
    "SessionView",
    "Topic",
    "add_to_agenda",
    "audience_residents",
    "book_seat",
    "cancel_booking",
    "cancel_session",
    "check_in",
    "check_in_open",
    "create_upcoming_sessions",
    "create_upcoming_sessions_for",
    "deadline_text",
    "draft_agenda",
    "due_reminders",
    "edit_session",
    "ensure_session",
    "get_defaults",
    "get_session",
    "last_day",
    "latest_session",
    "list_sessions",
    "minutes_refusal",
    "move_session",
    "my_booking",
    "my_topics",
    "need_candidates",
    "next_session",
    "normalise_code",
    "open_needs_of",
    "outcome_text",
    "promoted_text",
    "propose_topic",
    "publish_minutes",
    "queue_change_notices",
    "record_outcome",
    "session_roster",
    "session_topics",
    "session_view",
    "sessions_for",
    "set_defaults",
    "staff_communities",
    "upcoming_sessions_for",
    "when_text",
]
