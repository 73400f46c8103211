//! In-memory backend (work in progress).
