//! Orders and keys (issue 3).
