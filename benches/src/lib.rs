//! distro-benches: benchmark suites live under `benches/` (see issue 6).
