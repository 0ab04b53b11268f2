"""Everything a human reads: alert messages, slash replies, the `check` table and JSON.

format   numbers, durations, times, clipping, escaping, Block Kit blocks, markup per destination
text     the `Lang` structure: every user-visible string of one language
text_en  English; lang.lang_for() picks a table by its code
tones    one row per kind of alert event: severity, emoji, and the words from the language
alert    one poll cycle's events -> one grouped message (Block Kit + fallback, or console text)
slash    /sms-balance replies
check    the `check` table, its JSON and its exit status

Pure: values and `now` in, strings and dicts out. No I/O, no clock, no environment.
"""
