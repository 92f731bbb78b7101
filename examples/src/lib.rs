//! Runnable apps on `restate-runtime`; each binary lives in `src/bin/`.
