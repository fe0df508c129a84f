//! End-to-end tests live in `tests/`: a real hub, real site leaf servers, the scheduler and
//! site-managers in-process, and the real Docker Engine.
