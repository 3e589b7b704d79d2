//! Retry policy: Retry-After parsing, back-off with jitter, and recognising the daily-quota 429.
