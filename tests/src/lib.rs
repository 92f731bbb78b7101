//! End-to-end tests that run the example binaries as child processes live in `tests/tests/`.
