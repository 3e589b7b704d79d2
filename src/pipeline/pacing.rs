//! Machine-wide pacing: the starts of any two requests from any process of this user are at least
//! `min_interval + jitter` apart, first come first served, through a small locked state file beside the
//! credentials.
